//! Data formats shared by the shard and the coordinator: scalar values,
//! order-preserving key encoding, the row codec and scalar expressions.

pub mod expr;
pub mod keys;
pub mod row;
mod value;

pub use value::{DataType, Value};
