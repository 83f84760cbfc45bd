//! How an account's calls reach Kiro: the pooled HTTPS client, the per-account egress
//! proxy, and the certificate authorities trusted.

pub mod egress;
pub mod http;
pub mod trust;
