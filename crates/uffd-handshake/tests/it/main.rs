//! The handshake server against real sockets, fds and processes: a well-formed exchange in
//! every Firecracker payload version (`receive`), malformed and hostile input (`bad`), fd
//! passing (`fds`), and watching the VMM once the handshake is done (`watch`). `client` is a
//! hand-written Firecracker client, independent of the crate's own payload writer.

mod client;

mod bad;
mod fds;
mod receive;
mod sockets;
mod watch;
