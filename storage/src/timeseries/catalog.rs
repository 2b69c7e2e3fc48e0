//! One declaration per time-series table: [`rows!`] turns a list of
//! columns (name and Rust type, key first) into the row struct the
//! projectors hand in, the Arrow schema every file and query uses, and
//! the row-to-batch conversion, so a column is named in one place. The
//! [`super::table::TableSpec`] then adds the key, retention and rollups.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use super::table::UTC;

/// A Rust type a column may have, and its Arrow form.
pub trait ColumnType {
    fn data_type() -> DataType;
    const NULLABLE: bool;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;
}

/// The type of every `at` column: microseconds, UTC.
pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

impl ColumnType for String {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    const NULLABLE: bool = false;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(values))
    }
}

impl ColumnType for Option<String> {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    const NULLABLE: bool = true;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.map(Option::as_deref).collect::<StringArray>())
    }
}

impl ColumnType for DateTime<Utc> {
    fn data_type() -> DataType {
        ts_type()
    }
    const NULLABLE: bool = false;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(values.map(|t| t.timestamp_micros()))
                .with_timezone(UTC),
        )
    }
}

impl ColumnType for i64 {
    fn data_type() -> DataType {
        DataType::Int64
    }
    const NULLABLE: bool = false;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(values.copied()))
    }
}

impl ColumnType for Option<i64> {
    fn data_type() -> DataType {
        DataType::Int64
    }
    const NULLABLE: bool = true;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.copied().collect::<Int64Array>())
    }
}

impl ColumnType for f64 {
    fn data_type() -> DataType {
        DataType::Float64
    }
    const NULLABLE: bool = false;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(values.copied()))
    }
}

impl ColumnType for Option<f64> {
    fn data_type() -> DataType {
        DataType::Float64
    }
    const NULLABLE: bool = true;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.copied().collect::<Float64Array>())
    }
}

/// Declares a table's row struct `$row`, its schema `$schema` (a lazy
/// static, column order as declared) and `$row::to_batch` for the table
/// `$spec`.
macro_rules! rows {
    (
        $(#[$meta:meta])*
        $row:ident in $spec:ident as $schema:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $row {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        static $schema: std::sync::LazyLock<datafusion::arrow::datatypes::SchemaRef> =
            std::sync::LazyLock::new(|| {
                std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                    $( datafusion::arrow::datatypes::Field::new(
                        stringify!($field),
                        <$ty as $crate::timeseries::catalog::ColumnType>::data_type(),
                        <$ty as $crate::timeseries::catalog::ColumnType>::NULLABLE,
                    ), )*
                ]))
            });

        impl $row {
            /// The rows as one batch of the table's schema.
            pub fn to_batch(
                rows: &[$row],
            ) -> $crate::Result<datafusion::arrow::record_batch::RecordBatch> {
                let columns: Vec<datafusion::arrow::array::ArrayRef> = vec![
                    $( <$ty as $crate::timeseries::catalog::ColumnType>::array(
                        rows.iter().map(|r| &r.$field),
                    ), )*
                ];
                datafusion::arrow::record_batch::RecordBatch::try_new($spec.schema(), columns)
                    .map_err($crate::Error::arrow($spec.name))
            }
        }
    };
}

pub(crate) use rows;
