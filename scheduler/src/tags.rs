//! Data item tags and their Avro encoding (ANS-104).
//!
//! Tags are an Avro array of `{name: string, value: string}` records. An array is written as one
//! block: the zig-zag varint tag count, then for each tag the zig-zag length and bytes of its name
//! and of its value, then a zero count that ends the array. Zero tags are written as zero bytes
//! (not as the one-byte empty Avro array), as arbundles, the reference SU and HyperBEAM do.
//!
//! Decoding is strict: it accepts exactly the canonical bytes that [`encode_tags`] produces and
//! rejects every other encoding of the same tags (several blocks, sized blocks, varints longer
//! than needed, trailing bytes). A data item's signature covers its raw tag bytes, and
//! [`crate::data_item::DataItem`] keeps only the decoded tags, so only a canonical encoding lets it
//! rebuild the signed bytes. This module does not check signatures and does not know which tag
//! names AO gives meaning to.

use crate::data_item::DataItemError;

/// The most tags a data item may carry (HyperBEAM's limit); more is rejected as
/// [`DataItemError::TooManyTags`].
pub const TAG_COUNT_MAX: usize = 128;
/// The most bytes a tag name may have, in UTF-8 (HyperBEAM's limit); longer is rejected as
/// [`DataItemError::TagTooLarge`].
pub const TAG_NAME_BYTES_MAX: usize = 1024;
/// The most bytes a tag value may have, in UTF-8 (HyperBEAM's limit); longer is rejected as
/// [`DataItemError::TagTooLarge`].
pub const TAG_VALUE_BYTES_MAX: usize = 3072;

/// The most bytes a zig-zag varint of a 64-bit integer takes.
const VARINT_BYTES_MAX: usize = 10;

/// One tag of a data item. Order is significant and names may repeat.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

impl Tag {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Tag {
        Tag {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The value of the first tag called `name`, if any.
pub fn tag_value<'a>(tags: &'a [Tag], name: &str) -> Option<&'a str> {
    tags.iter().find(|tag| tag.name == name).map(|tag| tag.value.as_str())
}

/// Checks tags against the limits that [`decode_tags`] enforces, so that an item built from them
/// can be parsed again. Use it before signing tags that came from outside (a client, a guest).
pub fn check_tags(tags: &[Tag]) -> Result<(), DataItemError> {
    if tags.len() > TAG_COUNT_MAX {
        return Err(DataItemError::TooManyTags {
            count: tags.len() as u64,
        });
    }
    for (index, tag) in tags.iter().enumerate() {
        check_tag_field(index, "name", tag.name.len(), TAG_NAME_BYTES_MAX)?;
        check_tag_field(index, "value", tag.value.len(), TAG_VALUE_BYTES_MAX)?;
    }
    Ok(())
}

fn check_tag_field(index: usize, field: &'static str, len: usize, max: usize) -> Result<(), DataItemError> {
    if len > max {
        return Err(DataItemError::TagTooLarge {
            index,
            field,
            len: len as u64,
            max,
        });
    }
    Ok(())
}

/// Encodes tags as the canonical Avro array; zero tags give an empty vector.
///
/// It does not check limits (see [`check_tags`]): encoding what the caller built is always
/// possible, and whether to accept it is the caller's decision.
pub fn encode_tags(tags: &[Tag]) -> Vec<u8> {
    if tags.is_empty() {
        return Vec::new();
    }
    let payload: usize = tags.iter().map(|t| t.name.len() + t.value.len()).sum();
    let mut out = Vec::with_capacity(payload + 2 * VARINT_BYTES_MAX * (tags.len() + 1));
    write_long(&mut out, tags.len() as u64);
    for tag in tags {
        write_long(&mut out, tag.name.len() as u64);
        out.extend_from_slice(tag.name.as_bytes());
        write_long(&mut out, tag.value.len() as u64);
        out.extend_from_slice(tag.value.as_bytes());
    }
    write_long(&mut out, 0);
    out
}

/// Decodes the canonical Avro tag array of a data item whose header announced `count` tags.
///
/// Errors name the tag and the offset within `bytes`. Checks, in order: the count limit, that the
/// encoding is the canonical one, that it holds exactly `count` tags, the name and value limits,
/// UTF-8, and that nothing follows the array.
pub fn decode_tags(bytes: &[u8], count: u64) -> Result<Vec<Tag>, DataItemError> {
    if count > TAG_COUNT_MAX as u64 {
        return Err(DataItemError::TooManyTags { count });
    }
    if count == 0 {
        if !bytes.is_empty() {
            return Err(DataItemError::BadTags(format!(
                "the tag count is 0 but {} tag bytes follow (zero tags are encoded as no bytes)",
                bytes.len()
            )));
        }
        return Ok(Vec::new());
    }
    let mut reader = AvroReader { bytes, offset: 0 };
    let block_offset = reader.offset;
    let block_count = reader.read_long("the block count")?;
    if block_count < 0 {
        return Err(DataItemError::BadTags(format!(
            "negative Avro block count {block_count} at tag byte {block_offset} (a sized \
             block) is not the canonical encoding"
        )));
    }
    if block_count as u64 != count {
        return Err(DataItemError::BadTags(format!(
            "the Avro block at tag byte {block_offset} holds {block_count} tags but the header \
             says {count} (a single block of all tags is the canonical encoding)"
        )));
    }
    // `count` is at most TAG_COUNT_MAX, so this allocation is bounded.
    let mut tags = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let name = reader.read_string(index, "name", TAG_NAME_BYTES_MAX)?;
        let value = reader.read_string(index, "value", TAG_VALUE_BYTES_MAX)?;
        tags.push(Tag { name, value });
    }
    let end_offset = reader.offset;
    let end = reader.read_long("the end-of-array marker")?;
    if end != 0 {
        return Err(DataItemError::BadTags(format!(
            "expected the end-of-array marker 0 at tag byte {end_offset} after {count} tags, \
             found block count {end}"
        )));
    }
    if reader.offset != bytes.len() {
        return Err(DataItemError::BadTags(format!(
            "{} trailing bytes after the tag array at tag byte {}",
            bytes.len() - reader.offset,
            reader.offset
        )));
    }
    Ok(tags)
}

/// Writes `value` (a non-negative Avro long) as a zig-zag varint.
fn write_long(out: &mut Vec<u8>, value: u64) {
    assert!(value <= i64::MAX as u64, "Avro long out of range: {value}");
    // Zig-zag of a non-negative number n is 2n.
    let mut zigzag = value << 1;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A cursor over tag bytes; every read is bounds-checked and names what it was reading.
struct AvroReader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl AvroReader<'_> {
    /// Reads a zig-zag varint long in its shortest form.
    fn read_long(&mut self, what: &str) -> Result<i64, DataItemError> {
        let start = self.offset;
        let mut raw: u64 = 0;
        for index in 0..VARINT_BYTES_MAX {
            let Some(&byte) = self.bytes.get(self.offset) else {
                return Err(DataItemError::BadTags(format!(
                    "tag bytes end inside {what} (a varint starting at tag byte {start})"
                )));
            };
            self.offset += 1;
            let payload = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a 64-bit value.
            if index == VARINT_BYTES_MAX - 1 && payload > 1 {
                return Err(DataItemError::BadTags(format!(
                    "{what} at tag byte {start} overflows 64 bits"
                )));
            }
            raw |= payload << (7 * index);
            if byte & 0x80 == 0 {
                if index > 0 && byte == 0 {
                    return Err(DataItemError::BadTags(format!(
                        "{what} at tag byte {start} is a varint longer than needed \
                         (not the canonical encoding)"
                    )));
                }
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(DataItemError::BadTags(format!(
            "{what} at tag byte {start} is a varint longer than {VARINT_BYTES_MAX} bytes"
        )))
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes: the `field` of tag `index`.
    fn read_string(&mut self, index: usize, field: &'static str, max: usize) -> Result<String, DataItemError> {
        let length_offset = self.offset;
        let len = self.read_long(&format!("the length of tag {index}'s {field}"))?;
        if len < 0 {
            return Err(DataItemError::BadTags(format!(
                "tag {index}'s {field} has negative length {len} at tag byte {length_offset}"
            )));
        }
        let len = len as u64;
        if len > max as u64 {
            return Err(DataItemError::TagTooLarge { index, field, len, max });
        }
        // len <= max, so it fits in usize.
        let len = len as usize;
        let left = self.bytes.len() - self.offset;
        if len > left {
            return Err(DataItemError::BadTags(format!(
                "tag {index}'s {field} needs {len} bytes at tag byte {}, {left} left",
                self.offset
            )));
        }
        let raw = &self.bytes[self.offset..self.offset + len];
        let text = std::str::from_utf8(raw).map_err(|error| {
            DataItemError::BadTags(format!(
                "tag {index}'s {field} at tag byte {} is not UTF-8: {error}",
                self.offset
            ))
        })?;
        self.offset += len;
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_bytes() {
        let check = |tags: &[Tag], expected: &[u8]| {
            assert_eq!(encode_tags(tags), expected, "tags {tags:?}");
            let decoded = decode_tags(expected, tags.len() as u64).unwrap();
            assert_eq!(decoded, tags);
        };
        check(&[], &[]);
        check(&[Tag::new("a", "b")], &[0x02, 0x02, b'a', 0x02, b'b', 0x00]);
        check(
            &[Tag::new("a", ""), Tag::new("", "xy")],
            &[0x04, 0x02, b'a', 0x00, 0x00, 0x04, b'x', b'y', 0x00],
        );
        // A 64-byte name has length 64, zig-zag 128: the two-byte varint 0x80 0x01.
        let long = "n".repeat(64);
        let mut expected = vec![0x02, 0x80, 0x01];
        expected.extend_from_slice(long.as_bytes());
        expected.extend_from_slice(&[0x02, b'v', 0x00]);
        check(&[Tag::new(long.clone(), "v")], &expected);
    }

    #[test]
    fn round_trips_at_the_limits() {
        let tags: Vec<Tag> = (0..TAG_COUNT_MAX)
            .map(|i| {
                Tag::new(
                    format!("{i:0width$}", width = TAG_NAME_BYTES_MAX),
                    "é".repeat(TAG_VALUE_BYTES_MAX / 2),
                )
            })
            .collect();
        check_tags(&tags).unwrap();
        let bytes = encode_tags(&tags);
        assert_eq!(decode_tags(&bytes, tags.len() as u64).unwrap(), tags);
    }

    #[test]
    fn rejects_bad_encodings() {
        let check = |bytes: &[u8], count: u64, expected: &str| {
            let error = decode_tags(bytes, count).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "bytes {bytes:02x?} count {count}: got {error:?}, expected {expected:?}"
            );
        };
        check(&[0x00], 0, "tag count is 0 but 1 tag bytes follow");
        check(
            &[0x02, 0x02, b'a', 0x02, b'b', 0x00],
            2,
            "holds 1 tags but the header says 2",
        );
        check(
            &[0x01, 0x0c, 0x02, b'a', 0x02, b'b', 0x00],
            1,
            "negative Avro block count",
        );
        check(&[0x82, 0x00, 0x02, b'a', 0x02, b'b', 0x00], 1, "longer than needed");
        check(&[0x02, 0x02, b'a', 0x02, b'b', 0x00, 0x00], 1, "1 trailing bytes");
        check(&[0x02, 0x02, b'a', 0x02, b'b', 0x02], 1, "end-of-array marker 0");
        check(
            &[0x02, 0x02, b'a', 0x02, b'b'],
            1,
            "tag bytes end inside the end-of-array",
        );
        check(
            &[0x02, 0x02, b'a', 0x04, b'b'],
            1,
            "value needs 2 bytes at tag byte 4, 1 left",
        );
        check(&[0x02, 0x03, b'a', 0x02, b'b', 0x00], 1, "negative length -2");
        check(
            &[0x02, 0x02, 0xff, 0x02, b'b', 0x00],
            1,
            "name at tag byte 2 is not UTF-8",
        );
        check(
            &[0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            1,
            "overflows",
        );
        check(&[0x02, 0x02], 1, "tag 0's name needs 1 bytes at tag byte 2, 0 left");
        check(&[0x02, 0x80], 1, "tag bytes end inside the length of tag 0's name");
        check(&[], 1, "tag bytes end inside the block count");
    }

    #[test]
    fn enforces_limits() {
        let too_many = vec![Tag::new("a", "b"); TAG_COUNT_MAX + 1];
        let bytes = encode_tags(&too_many);
        assert!(matches!(
            decode_tags(&bytes, too_many.len() as u64),
            Err(DataItemError::TooManyTags { count: 129 })
        ));
        assert!(matches!(
            check_tags(&too_many),
            Err(DataItemError::TooManyTags { count: 129 })
        ));

        let long_name = vec![Tag::new("n".repeat(TAG_NAME_BYTES_MAX + 1), "v")];
        let long_value = vec![Tag::new("n", "v".repeat(TAG_VALUE_BYTES_MAX + 1))];
        for (tags, field) in [(long_name, "name"), (long_value, "value")] {
            let error = decode_tags(&encode_tags(&tags), 1).unwrap_err();
            assert!(
                matches!(error, DataItemError::TagTooLarge { index: 0, field: f, .. } if f == field),
                "{error}"
            );
            assert!(check_tags(&tags).is_err());
        }
    }

    #[test]
    fn tag_value_finds_the_first_match() {
        let tags = [Tag::new("A", "1"), Tag::new("B", "2"), Tag::new("A", "3")];
        assert_eq!(tag_value(&tags, "A"), Some("1"));
        assert_eq!(tag_value(&tags, "B"), Some("2"));
        assert_eq!(tag_value(&tags, "a"), None);
    }
}
