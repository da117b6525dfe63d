//! The values that cross the database API: what a statement binds ([`ToValue`]) and what a
//! row column reads back as ([`FromValue`]), the same on SQLite and PostgreSQL.

use super::Error;

/// One SQL value, as SQLite's five storage classes name them (PostgreSQL's integer types read
/// as `Integer`, its booleans as 0/1, its floating types as `Real`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// The value's kind, for conversion errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

/// Something a statement can bind.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

macro_rules! integer_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(*self as i64)
            }
        }
    )*};
}
integer_to_value!(i64, i32, u32, u16, u8);

impl ToValue for u64 {
    fn to_value(&self) -> Value {
        // Versions, counts and limits: never near i64::MAX; saturate rather than wrap.
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// Something a column reads back as.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Result<Self, Error>;
}

fn mismatch<T>(want: &str, got: &Value) -> Result<T, Error> {
    Err(Error::Conversion(format!("expected {want}, the column holds {}", got.kind())))
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, Error> {
        Ok(value)
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Integer(i) => Ok(i),
            other => mismatch("an integer", &other),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: Value) -> Result<Self, Error> {
        let i = i64::from_value(value)?;
        i32::try_from(i).map_err(|_| Error::Conversion(format!("{i} does not fit in 32 bits")))
    }
}

impl FromValue for u64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        let i = i64::from_value(value)?;
        u64::try_from(i).map_err(|_| Error::Conversion(format!("{i} is negative")))
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, Error> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => mismatch("a number", &other),
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Text(s) => Ok(s),
            other => mismatch("text", &other),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Blob(b) => Ok(b),
            Value::Text(s) => Ok(s.into_bytes()),
            other => mismatch("a blob", &other),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Self, Error> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}
