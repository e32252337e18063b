//! The record frame: encoding one record into bytes and checking bytes back into a record.
//!
//! The layout is specified in the module docs of `log`. This file does no I/O and knows nothing
//! of segments or positions: it sees a byte slice that starts where a frame should start.

/// Bytes of a frame header: length (4), kind (1), reserved (3), checksum (4).
pub(super) const HEADER_BYTES: usize = 12;

/// Frames start at, and their lengths are, multiples of this.
pub(super) const ALIGN_BYTES: usize = 8;

/// A frame checked and decoded in place.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub(super) kind: u8,
    pub(super) payload: &'a [u8],
    /// Length of the whole frame, header and padding included.
    pub(super) frame_bytes: usize,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    #[error("only {room_bytes} bytes left, too few for a frame header, and they are not zero")]
    HeaderTruncated { room_bytes: usize },
    #[error("record kind is 0, which is never valid")]
    KindZero,
    #[error("reserved header bytes are {0:02x?}, not zero")]
    ReservedNonZero([u8; 3]),
    #[error("frame of {frame_bytes} bytes (payload {payload_bytes}) runs past the {room_bytes} bytes left")]
    TooLong {
        payload_bytes: u32,
        frame_bytes: u64,
        room_bytes: usize,
    },
    #[error("checksum mismatch: header says {stored:#010x}, contents give {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("padding after the payload is not zero")]
    PaddingNonZero,
    #[error("header is all zero (the end of data) where a record should be")]
    EndOfData,
}

/// Length of the frame of a payload of `payload_bytes`.
pub(super) fn frame_bytes(payload_bytes: usize) -> usize {
    (HEADER_BYTES + payload_bytes).next_multiple_of(ALIGN_BYTES)
}

/// Appends the frame of one record to `out`.
pub(super) fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    assert_ne!(kind, 0, "record kind 0 is reserved for the end of data");
    let payload_bytes = u32::try_from(payload.len()).expect("payload length checked against batch_bytes_max");
    let start = out.len();
    let mut head = [0u8; 8];
    head[0..4].copy_from_slice(&payload_bytes.to_le_bytes());
    head[4] = kind;
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&head), payload);
    out.extend_from_slice(&head);
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(start + frame_bytes(payload.len()), 0);
}

/// Checks the frame at the start of `bytes`, which run to the end of the segment (or of the
/// in-memory batch). `Ok(None)` is the end of data: a header of zeros, or fewer bytes than a
/// header, all zero.
pub(super) fn decode(bytes: &[u8]) -> Result<Option<Frame<'_>>, FrameError> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return if bytes.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(FrameError::HeaderTruncated {
                room_bytes: bytes.len(),
            })
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let payload_bytes = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let kind = header[4];
    let reserved = [header[5], header[6], header[7]];
    let stored = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if kind == 0 {
        return Err(FrameError::KindZero);
    }
    if reserved != [0; 3] {
        return Err(FrameError::ReservedNonZero(reserved));
    }
    // A u32 payload length always fits a usize here (64-bit targets only).
    let payload_len = payload_bytes as usize;
    let frame_len = frame_bytes(payload_len);
    if frame_len > bytes.len() {
        return Err(FrameError::TooLong {
            payload_bytes,
            frame_bytes: frame_len as u64,
            room_bytes: bytes.len(),
        });
    }
    let payload = &bytes[HEADER_BYTES..HEADER_BYTES + payload_len];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[..8]), payload);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    if bytes[HEADER_BYTES + payload_len..frame_len].iter().any(|&b| b != 0) {
        return Err(FrameError::PaddingNonZero);
    }
    Ok(Some(Frame {
        kind,
        payload,
        frame_bytes: frame_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(kind, payload, &mut out);
        out
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = encoded(7, b"abc");
        let checksum = crc32c::crc32c_append(crc32c::crc32c(&[3, 0, 0, 0, 7, 0, 0, 0]), b"abc");
        let mut expected = vec![3, 0, 0, 0, 7, 0, 0, 0];
        expected.extend_from_slice(&checksum.to_le_bytes());
        expected.extend_from_slice(b"abc");
        expected.push(0); // 12 + 3 = 15, padded to 16
        assert_eq!(bytes, expected);
    }

    #[test]
    fn frame_lengths_are_multiples_of_eight() {
        for (payload_bytes, expected) in [(0, 16), (4, 16), (5, 24), (12, 24), (13, 32)] {
            assert_eq!(frame_bytes(payload_bytes), expected, "payload {payload_bytes}");
            assert_eq!(encoded(1, &vec![9; payload_bytes]).len(), expected);
        }
    }

    #[test]
    fn round_trips_with_room_to_spare() {
        let mut bytes = encoded(255, b"hello, log");
        let frame_len = bytes.len();
        bytes.extend_from_slice(&[0; 40]);
        let frame = decode(&bytes).expect("valid").expect("not the end");
        assert_eq!(frame.kind, 255);
        assert_eq!(frame.payload, b"hello, log");
        assert_eq!(frame.frame_bytes, frame_len);
        assert_eq!(decode(&bytes[frame_len..]), Ok(None));
    }

    #[test]
    fn end_of_data() {
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[0; 8]), Ok(None));
        assert_eq!(decode(&[0; 12]), Ok(None));
        assert_eq!(decode(&[0; 64]), Ok(None));
    }

    /// Damages a valid 16-byte frame of kind 1, payload "abc", with `damage`, and expects
    /// `expected` from decoding it followed by 16 zero bytes.
    fn check(damage: impl Fn(&mut Vec<u8>), expected: FrameError) {
        let mut bytes = encoded(1, b"abc");
        damage(&mut bytes);
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(decode(&bytes), Err(expected));
    }

    #[test]
    fn damaged_frames_are_rejected() {
        let stored = u32::from_le_bytes(encoded(1, b"abc")[8..12].try_into().expect("4 bytes"));
        check(|b| b[4] = 0, FrameError::KindZero);
        check(|b| b[6] = 0x80, FrameError::ReservedNonZero([0, 0x80, 0]));
        check(
            |b| b[0..4].copy_from_slice(&100u32.to_le_bytes()),
            FrameError::TooLong {
                payload_bytes: 100,
                frame_bytes: 112,
                room_bytes: 32,
            },
        );
        check(
            |b| b[3] = 0xff,
            FrameError::TooLong {
                payload_bytes: 0xff00_0003,
                frame_bytes: 0xff00_0010,
                room_bytes: 32,
            },
        );
        let flipped_payload = {
            let mut b = encoded(1, b"abc");
            b[13] ^= 1;
            let head: [u8; 8] = b[..8].try_into().expect("8 bytes");
            crc32c::crc32c_append(crc32c::crc32c(&head), &b[12..15])
        };
        check(
            |b| b[13] ^= 1,
            FrameError::Checksum {
                stored,
                computed: flipped_payload,
            },
        );
        check(|b| b[8] ^= 0x10, {
            FrameError::Checksum {
                stored: stored ^ 0x10,
                computed: stored,
            }
        });
        check(|b| b[15] = 1, FrameError::PaddingNonZero);
        // A kind-1 header cut short by the end of the buffer.
        assert_eq!(
            decode(&[3, 0, 0, 0, 1, 0, 0, 0]),
            Err(FrameError::HeaderTruncated { room_bytes: 8 })
        );
    }
}
