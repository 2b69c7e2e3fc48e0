//! One declaration per time-series table: [`rows!`] turns a list of
//! columns (name and Rust type, key first) into the row struct the
//! projectors hand in and the API answers with, the Arrow schema every
//! file and query uses, the conversions between rows and batches, and the
//! column lists (all of them, and those a timeline charts), so a column
//! is named in one place. The [`super::table::TableSpec`] then adds the
//! key, retention and rollups.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};

use super::table::UTC;

/// A Rust type a column may have, and its Arrow form.
pub trait ColumnType: Sized {
    fn data_type() -> DataType;
    const NULLABLE: bool;
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;
    /// The values of `array`, `None` when it is not of this type (or
    /// holds a null where this type has none).
    fn values(array: &dyn Array) -> Option<Vec<Self>>;
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
    fn values(array: &dyn Array) -> Option<Vec<Self>> {
        let a = array.as_string_opt::<i32>()?;
        (a.null_count() == 0).then(|| a.iter().flatten().map(str::to_string).collect())
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
    fn values(array: &dyn Array) -> Option<Vec<Self>> {
        let a = array.as_string_opt::<i32>()?;
        Some(a.iter().map(|v| v.map(str::to_string)).collect())
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
    fn values(array: &dyn Array) -> Option<Vec<Self>> {
        let a = array.as_any().downcast_ref::<TimestampMicrosecondArray>()?;
        if a.null_count() != 0 {
            return None;
        }
        a.values()
            .iter()
            .map(|&m| DateTime::from_timestamp_micros(m))
            .collect()
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
    fn values(array: &dyn Array) -> Option<Vec<Self>> {
        let a = array.as_primitive_opt::<Int64Type>()?;
        (a.null_count() == 0).then(|| a.values().to_vec())
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
    fn values(array: &dyn Array) -> Option<Vec<Self>> {
        Some(array.as_primitive_opt::<Int64Type>()?.iter().collect())
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
    fn values(array: &dyn Array) -> Option<Vec<Self>> {
        let a = array.as_primitive_opt::<Float64Type>()?;
        (a.null_count() == 0).then(|| a.values().to_vec())
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
    fn values(array: &dyn Array) -> Option<Vec<Self>> {
        Some(array.as_primitive_opt::<Float64Type>()?.iter().collect())
    }
}

/// Declares a table's row struct `$row` (serialisable as the API answers
/// with it), its schema `$schema` (a lazy static, column order as
/// declared), `$row::to_batch` / `$row::from_batch` for the table `$spec`,
/// `$row::COLUMNS` and `$row::charted()`: the columns marked `[charted]`,
/// those a PC's timeline averages per bucket.
macro_rules! rows {
    (@charted charted) => { true };
    (@charted) => { false };
    (
        $(#[$meta:meta])*
        $row:ident in $spec:ident as $schema:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty $([$role:ident])? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
            /// Every column, in the table's order.
            pub const COLUMNS: &'static [&'static str] = &[$( stringify!($field) ),*];

            /// The columns a timeline averages per bucket, in the table's
            /// order.
            pub fn charted() -> &'static [&'static str] {
                static CHARTED: std::sync::LazyLock<Vec<&'static str>> =
                    std::sync::LazyLock::new(|| {
                        [$( (stringify!($field), rows!(@charted $($role)?)) ),*]
                            .into_iter()
                            .filter_map(|(name, charted)| charted.then_some(name))
                            .collect()
                    });
                &CHARTED
            }

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

            /// The rows of a batch holding (at least) the table's columns.
            pub fn from_batch(
                batch: &datafusion::arrow::record_batch::RecordBatch,
            ) -> $crate::Result<Vec<$row>> {
                let shape = |message: String| $crate::Error::Shape {
                    table: $spec.name,
                    message,
                };
                $(
                    let mut $field = batch
                        .column_by_name(stringify!($field))
                        .and_then(|c| {
                            <$ty as $crate::timeseries::catalog::ColumnType>::values(c.as_ref())
                        })
                        .ok_or_else(|| shape(format!(
                            "column {} missing or of an unexpected type",
                            stringify!($field)
                        )))?
                        .into_iter();
                )*
                (0..batch.num_rows())
                    .map(|_| Some($row { $( $field: $field.next()?, )* }))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| shape("columns of unequal length".into()))
            }
        }
    };
}

pub(crate) use rows;
