//! The operator commands beside the server: `aiproxy login` (sign in to Kiro without the IDE)
//! and `aiproxy accounts` (what the pool's accounts are doing).

pub mod accounts;
pub mod login;
