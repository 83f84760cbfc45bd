//! Kiro's wire protocol (docs/kiro-protocol.md §4-§13): the request body built from a canonical
//! request, the AWS event-stream framing of the answer, its translation into canonical
//! events, and what Kiro's errors mean.

pub mod errors;
pub mod eventstream;
pub mod overflow;
pub mod request;
pub mod stream;
pub mod thinking;
pub mod translate;
pub mod wire;
