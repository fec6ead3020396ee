//! From a snapshot URL to an `object_store` client and the prefix objects live under.

use std::str::FromStr;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};

/// A parsed snapshot URL: the client and the prefix inside it.
pub(crate) struct Location {
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) prefix: ObjectPath,
    /// The URL as it may be shown: no credentials, no query.
    pub(crate) shown: String,
}

/// The URL without user information, query or fragment (presigned or SAS URLs carry secrets).
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

pub(crate) fn open(url_text: &str, config: &StoreConfig) -> Result<Location> {
    let url = Url::parse(url_text).map_err(|e| StoreError::InvalidUrl {
        // An unparsable URL cannot be redacted piece by piece: show its scheme only.
        url: url_text.split(':').next().unwrap_or_default().to_owned() + ":…",
        reason: e.to_string(),
    })?;
    let shown = redact(&url);
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: shown.clone(),
        reason: crate::fetch::scrub(&reason),
    };
    // The crate does its own retries (with jitter, and an idle timeout per read), so the
    // client's are off; so is its whole-request timeout, which cuts slow but moving transfers.
    let client = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(config.connect_timeout)
        .with_pool_max_idle_per_host(config.max_connections)
        .with_allow_http(url.scheme() == "http");
    let retry = RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    };
    let (objects, prefix): (Arc<dyn ObjectStore>, String) = match url.scheme() {
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_client_options(client)
                .with_retry(retry);
            for (key, value) in
                env_client_settings("AWS_", |k| matches!(k, AmazonS3ConfigKey::Client(_)))
            {
                builder = builder.with_config(key, value);
            }
            for (key, value) in &config.options {
                builder = builder.with_config(parse_key::<AmazonS3ConfigKey>(key)?, value);
            }
            let store = builder.build().map_err(|e| invalid(e.to_string()))?;
            (Arc::new(store), url.path().to_owned())
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_client_options(client)
                .with_retry(retry);
            for (key, value) in
                env_client_settings("GOOGLE_", |k| matches!(k, GoogleConfigKey::Client(_)))
            {
                builder = builder.with_config(key, value);
            }
            for (key, value) in &config.options {
                builder = builder.with_config(parse_key::<GoogleConfigKey>(key)?, value);
            }
            let store = builder.build().map_err(|e| invalid(e.to_string()))?;
            (Arc::new(store), url.path().to_owned())
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_client_options(client)
                .with_retry(retry);
            for (key, value) in
                env_client_settings("AZURE_", |k| matches!(k, AzureConfigKey::Client(_)))
            {
                builder = builder.with_config(key, value);
            }
            for (key, value) in &config.options {
                builder = builder.with_config(parse_key::<AzureConfigKey>(key)?, value);
            }
            let store = builder.build().map_err(|e| invalid(e.to_string()))?;
            (Arc::new(store), url.path().to_owned())
        }
        "http" | "https" => {
            // The whole URL is the base; object names are appended to it.
            let mut builder = HttpBuilder::new()
                .with_url(url.as_str())
                .with_client_options(client)
                .with_retry(retry);
            for (key, value) in &config.options {
                builder = builder.with_config(parse_key::<ClientConfigKey>(key)?, value);
            }
            let store = builder.build().map_err(|e| invalid(e.to_string()))?;
            (Arc::new(store), String::new())
        }
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| invalid("not a local absolute path".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io("creating the store directory", &dir, e))?;
            let store =
                LocalFileSystem::new_with_prefix(&dir).map_err(|e| invalid(e.to_string()))?;
            (Arc::new(store), String::new())
        }
        other => {
            return Err(invalid(format!(
                "scheme {other:?} is not one of s3, gs, az, http, https, file"
            )));
        }
    };
    let prefix =
        ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| invalid(format!("prefix: {e}")))?;
    Ok(Location {
        objects,
        prefix,
        shown,
    })
}

/// The client settings the environment gives under `prefix` (`AWS_ALLOW_HTTP`,
/// `GOOGLE_PROXY_URL`, ...), read as `from_env` reads them: `with_client_options` replaces
/// what `from_env` had read, so they are applied again after it (and before the explicit
/// options, which win).
fn env_client_settings<K: FromStr>(
    prefix: &str,
    is_client: impl Fn(&K) -> bool,
) -> Vec<(K, String)> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(key, _)| key.starts_with(prefix))
        .filter_map(|(key, value)| Some((key.to_ascii_lowercase().parse::<K>().ok()?, value)))
        .filter(|(key, _)| is_client(key))
        .collect()
}

fn parse_key<K: FromStr>(key: &str) -> Result<K> {
    key.parse().map_err(|_| StoreError::InvalidOption {
        key: key.to_owned(),
        reason: "not a config key of this kind of store".into(),
    })
}
