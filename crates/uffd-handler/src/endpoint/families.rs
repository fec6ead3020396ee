//! Writes metric families for one VMM: each carries its `vmm` label.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use uffd_engine::{LatencyBuckets, MetricsSnapshot};

/// The `vmm` label.
pub(super) type Vmm = [(&'static str, String); 1];

/// Writes one metric family after another.
pub(super) struct Families<'a> {
    pub(super) encoder: DescriptorEncoder<'a>,
    pub(super) vmm: Vmm,
}

impl Families<'_> {
    pub(super) fn counter(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: u64,
    ) -> Fmt {
        let counter = ConstCounter::new(value);
        let mut family = self
            .encoder
            .encode_descriptor(name, help, unit, counter.metric_type())?;
        counter.encode(family.encode_family(&self.vmm)?)
    }

    pub(super) fn seconds_counter(&mut self, name: &str, help: &str, value: f64) -> Fmt {
        let counter = ConstCounter::new(value);
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            counter.metric_type(),
        )?;
        counter.encode(family.encode_family(&self.vmm)?)
    }

    pub(super) fn gauge<T>(&mut self, name: &str, help: &str, unit: Option<&Unit>, value: T) -> Fmt
    where
        ConstGauge<T>: EncodeMetric,
    {
        let gauge = ConstGauge::new(value);
        let mut family = self
            .encoder
            .encode_descriptor(name, help, unit, gauge.metric_type())?;
        gauge.encode(family.encode_family(&self.vmm)?)
    }

    /// One counter family with a second label, one series per `(value, count)`.
    pub(super) fn labelled_counters(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        series: &[(&'static str, u64)],
    ) -> Fmt {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for &(value, count) in series {
            let labels = [("vmm", self.vmm[0].1.clone()), (label, value.to_string())];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// One gauge family with a second label.
    pub(super) fn labelled_gauges(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        series: &[(String, u64)],
    ) -> Fmt {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (value, count) in series {
            let labels = [("vmm", self.vmm[0].1.clone()), (label, value.clone())];
            ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    pub(super) fn latency_histogram(&mut self, m: &MetricsSnapshot) -> Fmt {
        let buckets: Vec<(f64, u64)> = m
            .latency_buckets
            .counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let bound = LatencyBuckets::bound_ns(i).map_or(f64::INFINITY, |ns| ns as f64 / 1e9);
                (bound, n)
            })
            .collect();
        let mut family = self.encoder.encode_descriptor(
            "fault_latency",
            "Service latency of each fault served, from its message read to its install \
             (buckets: powers of two nanoseconds; the sum is the vCPU stall time)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        family
            .encode_family(&self.vmm)?
            .encode_histogram::<NoLabelSet>(
                m.stall_time.as_secs_f64(),
                m.latency_samples,
                &buckets,
                None,
            )
    }
}

pub(super) type Fmt = Result<(), std::fmt::Error>;
