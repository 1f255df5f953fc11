//! A serde `Serializer` that writes RFC 8785 bytes directly.
//!
//! It produces exactly what `encode_value(&serde_json::to_value(x))` does
//! (property-tested against it), without building a `Value` tree: settlement
//! encodes every receipt several times (hashes, signatures, the write-ahead
//! log), and the tree's allocations were most of that cost. No crate does
//! JCS through serde with our integer-only rules, hence this one.
//!
//! Objects are written in field order; when their keys are not already in
//! JCS order (UTF-16 code units) the members are reordered in place at the
//! end of the object, which costs one copy of that object.

use super::{write_string, CanonicalError, MAX_SAFE_INTEGER};
use serde::ser::{self, Serialize};
use std::borrow::Cow;
use std::fmt::Display;

impl ser::Error for CanonicalError {
    fn custom<T: Display>(msg: T) -> Self {
        CanonicalError::Shape(msg.to_string())
    }
}

/// Writes canonical JSON into `out`.
pub(crate) struct Serializer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    /// A top-level object member to leave out (the signature, for the bytes
    /// a signature covers); applies to the outermost object only.
    pub(crate) skip: Option<&'static str>,
}

impl<'a> Serializer<'a> {
    fn int(self, v: i128) -> Result<(), CanonicalError> {
        if v.unsigned_abs() > u128::from(MAX_SAFE_INTEGER) {
            return Err(CanonicalError::IntegerRange(v.to_string()));
        }
        self.out.extend_from_slice(itoa_buf(v).as_bytes());
        Ok(())
    }

    fn object(self) -> Object<'a> {
        self.out.push(b'{');
        let start = self.out.len();
        Object {
            out: self.out,
            skip: self.skip,
            start,
            members: Vec::new(),
            key: None,
        }
    }
}

/// Formats an integer without allocating.
struct IntBuf {
    bytes: [u8; 40],
    start: usize,
}

impl IntBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn itoa_buf(v: i128) -> IntBuf {
    let mut b = IntBuf {
        bytes: [0; 40],
        start: 40,
    };
    let mut n = v.unsigned_abs();
    loop {
        b.start -= 1;
        b.bytes[b.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        b.start -= 1;
        b.bytes[b.start] = b'-';
    }
    b
}

/// An object being written: its members' byte ranges in `out`, for reordering.
pub(crate) struct Object<'a> {
    out: &'a mut Vec<u8>,
    skip: Option<&'static str>,
    /// First byte after `{`.
    start: usize,
    /// (key, start, end) of each `"key":value` member.
    members: Vec<(Cow<'static, str>, usize, usize)>,
    /// The key of a map entry whose value comes next.
    key: Option<String>,
}

/// JCS order: UTF-16 code units (equal to byte order for ASCII keys).
fn key_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

impl<'a> Object<'a> {
    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> Result<(), CanonicalError> {
        if self.skip == Some(&*key) {
            return Ok(());
        }
        if !self.members.is_empty() {
            self.out.push(b',');
        }
        let at = self.out.len();
        write_string(&key, self.out);
        self.out.push(b':');
        value.serialize(Serializer {
            out: self.out,
            skip: None,
        })?;
        self.members.push((key, at, self.out.len()));
        Ok(())
    }

    /// Closes the object, reordering its members if needed; gives back the output.
    fn finish(mut self) -> Result<&'a mut Vec<u8>, CanonicalError> {
        let sorted = self
            .members
            .windows(2)
            .all(|w| key_cmp(&w[0].0, &w[1].0).is_lt());
        if !sorted {
            self.members.sort_by(|a, b| key_cmp(&a.0, &b.0));
            if self.members.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(CanonicalError::Shape("duplicate object key".into()));
            }
            let body = self.out.split_off(self.start);
            for (i, (_, s, e)) in self.members.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out
                    .extend_from_slice(&body[s - self.start..e - self.start]);
            }
        }
        self.out.push(b'}');
        Ok(self.out)
    }
}

/// An array being written.
pub(crate) struct Array<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Array<'a> {
    fn close(self) -> &'a mut Vec<u8> {
        self.out.push(b']');
        self.out
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value.serialize(Serializer {
            out: self.out,
            skip: None,
        })
    }
}

/// `{"variant": ...}` around an enum variant's content (an array or an
/// object), closed with one more `}`.
pub(crate) struct Variant<C>(C);

/// Integer methods that widen losslessly to `i128` and share the range check.
macro_rules! int_methods {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<(), CanonicalError> {
            self.int(i128::from(v))
        })*
    };
}

impl<'a> ser::Serializer for Serializer<'a> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Array<'a>;
    type SerializeTuple = Array<'a>;
    type SerializeTupleStruct = Array<'a>;
    type SerializeTupleVariant = Variant<Array<'a>>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Variant<Object<'a>>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    int_methods!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8,
        serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);
    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        match i128::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => Err(CanonicalError::IntegerRange(v.to_string())),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        Err(CanonicalError::Float(v.to_string()))
    }
    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        Err(CanonicalError::Float(v.to_string()))
    }
    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        write_string(v.encode_utf8(&mut [0; 4]), self.out);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        write_string(v, self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        // As serde_json: an array of numbers.
        let mut a = ser::Serializer::serialize_seq(self, Some(v.len()))?;
        for b in v {
            a.item(b)?;
        }
        ser::SerializeSeq::end(a)
    }
    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        let mut o = self.object();
        o.member(Cow::Borrowed(variant), value)?;
        o.finish().map(drop)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Array<'a>, CanonicalError> {
        self.out.push(b'[');
        Ok(Array {
            out: self.out,
            first: true,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Array<'a>, CanonicalError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Array<'a>, CanonicalError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        open_variant(variant, self.out);
        Ok(Variant(self.serialize_seq(None)?))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Object<'a>, CanonicalError> {
        Ok(self.object())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Object<'a>, CanonicalError> {
        Ok(self.object())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        open_variant(variant, self.out);
        Ok(Variant(
            Serializer {
                out: self.out,
                skip: None,
            }
            .object(),
        ))
    }
}

impl ser::SerializeSeq for Array<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.item(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close();
        Ok(())
    }
}

impl ser::SerializeTuple for Array<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.item(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Array<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.item(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Variant<Array<'_>> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.0.item(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.0.close().push(b'}');
        Ok(())
    }
}

impl ser::SerializeStructVariant for Variant<Object<'_>> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        self.0.member(Cow::Borrowed(key), v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.0.finish()?.push(b'}');
        Ok(())
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CanonicalError> {
        self.key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| CanonicalError::Shape("map value without a key".into()))?;
        self.member(Cow::Owned(key), v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish().map(drop)
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        self.member(Cow::Borrowed(key), v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.finish().map(drop)
    }
}

/// Map keys: strings, and (as serde_json does) integers, booleans and chars
/// written as strings.
struct KeySerializer;

fn key_err() -> CanonicalError {
    CanonicalError::Shape("object keys must be strings".into())
}

macro_rules! key_as_string {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<String, CanonicalError> {
            Ok(v.to_string())
        })*
    };
}

impl ser::Serializer for KeySerializer {
    type Ok = String;
    type Error = CanonicalError;
    type SerializeSeq = ser::Impossible<String, CanonicalError>;
    type SerializeTuple = ser::Impossible<String, CanonicalError>;
    type SerializeTupleStruct = ser::Impossible<String, CanonicalError>;
    type SerializeTupleVariant = ser::Impossible<String, CanonicalError>;
    type SerializeMap = ser::Impossible<String, CanonicalError>;
    type SerializeStruct = ser::Impossible<String, CanonicalError>;
    type SerializeStructVariant = ser::Impossible<String, CanonicalError>;

    key_as_string!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16,
        serialize_i32: i32, serialize_i64: i64, serialize_i128: i128,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str);

    fn serialize_f32(self, _: f32) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_f64(self, _: f64) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_none(self) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_unit(self) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, CanonicalError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, CanonicalError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, CanonicalError> {
        Err(key_err())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(key_err())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(key_err())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(key_err())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(key_err())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(key_err())
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(key_err())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(key_err())
    }
}

/// Writes `{"variant":`, the start of an externally tagged enum variant.
fn open_variant(variant: &str, out: &mut Vec<u8>) {
    out.push(b'{');
    write_string(variant, out);
    out.push(b':');
}
