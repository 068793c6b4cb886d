//! The Pulsar backend's settings (`[bus]` with `backend = "pulsar"`), built
//! and validated by [`crate::config`] (`PulsarConfig::for_url` too). Not
//! behind the `pulsar` feature: the admin client and the CLI use them.

use std::path::PathBuf;
use std::time::Duration;

/// Connection to an Apache Pulsar cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct PulsarConfig {
    /// Binary protocol URL, `pulsar://host:6650` or `pulsar+ssl://host:6651`.
    pub url: String,
    /// Admin REST URL, e.g. `http://host:8080`.
    pub admin_url: String,
    /// Tenant of every topic.
    pub tenant: String,
    /// Namespace of every topic.
    pub namespace: String,
    /// File with the JWT to authenticate with (read at start, never logged).
    pub token_file: Option<PathBuf>,
    /// CA certificate to trust for TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Per-operation timeout.
    pub operation_timeout: Duration,
    /// Set namespace policies at start.
    pub configure_namespace: bool,
}
