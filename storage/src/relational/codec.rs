//! Row values: JSON documents. Self-describing, so a row written before a
//! field existed decodes with that field's default, and a row written by a
//! newer version with fields we do not know still decodes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

pub fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::Codec { table, source })
}

pub fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Codec { table, source })
}
