//! Kafka's zigzag variable-length integers (protobuf style), as used inside v2 records.
//!
//! Owns decoding from untrusted slices (bounded: at most 5 bytes for a varint, 10 for a
//! varlong, like Kafka's `ByteUtils`) and encoding into a `Vec`. Pure functions; any
//! thread may call them.

use crate::batch::BatchError;

/// Reads a zigzag varint (i32) at `*pos`, advancing `*pos` past it.
///
/// Fails with [`BatchError::RecordFraming`] when the buffer ends inside the varint or
/// the varint is longer than 5 bytes.
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    let raw = read_unsigned(buf, pos, 5)?;
    // Java truncates to 32 bits too; the high bits of a 5th byte are dropped.
    let raw = raw as u32;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zigzag varlong (i64) at `*pos`, advancing `*pos` past it.
pub fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let raw = read_unsigned(buf, pos, 10)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_unsigned(buf: &[u8], pos: &mut usize, max_len: usize) -> Result<u64, BatchError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..max_len {
        let at = start + i;
        let byte = *buf.get(at).ok_or(BatchError::RecordFraming {
            position: at,
            record: -1,
            reason: "buffer ends inside a varint",
        })?;
        value |= u64::from(byte & 0x7f)
            .checked_shl(7 * i as u32)
            .unwrap_or(0);
        if byte & 0x80 == 0 {
            *pos = at + 1;
            return Ok(value);
        }
    }
    Err(BatchError::RecordFraming {
        position: start,
        record: -1,
        reason: "varint too long",
    })
}

/// Appends `value` as a zigzag varint.
pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    let zigzag = ((value << 1) ^ (value >> 31)) as u32;
    write_unsigned(out, u64::from(zigzag));
}

/// Appends `value` as a zigzag varlong.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let zigzag = ((value << 1) ^ (value >> 63)) as u64;
    write_unsigned(out, zigzag);
}

fn write_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i32>()) {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            prop_assert!(buf.len() <= 5);
            let mut pos = 0;
            prop_assert_eq!(read_varint(&buf, &mut pos)?, v);
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let mut buf = Vec::new();
            write_varlong(&mut buf, v);
            prop_assert!(buf.len() <= 10);
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&buf, &mut pos)?, v);
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut pos = 0;
            let _ = read_varint(&bytes, &mut pos);
            let mut pos = 0;
            let _ = read_varlong(&bytes, &mut pos);
        }
    }

    #[test]
    fn known_encodings() {
        let mut buf = Vec::new();
        write_varint(&mut buf, -1);
        assert_eq!(buf, [0x01]);
        buf.clear();
        write_varint(&mut buf, 1);
        assert_eq!(buf, [0x02]);
        buf.clear();
        write_varint(&mut buf, 64);
        assert_eq!(buf, [0x80, 0x01]);
        let mut pos = 0;
        assert!(read_varint(&[0xff; 6], &mut pos).is_err());
        assert!(read_varint(&[0x80], &mut pos).is_err());
    }
}
