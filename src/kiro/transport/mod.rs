//! How an account's calls reach Kiro: the pooled HTTPS client and the per-account egress
//! proxy.

pub mod egress;
pub mod http;
