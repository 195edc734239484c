//! The records of `__consumer_offsets`, in Kafka's own format, so a log
//! written by Felice reads as Kafka's and the other way round.
//!
//! Keys (big-endian, `int16` version first):
//! - version 0 and 1: an offset commit, `group string, topic string, partition int32`;
//! - version 2: group metadata, `group string`;
//! - any other version: records of coordinators Felice does not run (KIP-848
//!   consumer groups, share groups): replay skips them.
//!
//! Values: `OffsetCommitValue` v0–v4 and `GroupMetadataValue` v0–v4 are read;
//! v3 of each is written (what Kafka writes when no expire timestamp is set).
//! A null value is a tombstone: the offset or the group was deleted.
//!
//! Decoding never panics: every read is bounds-checked, counts are checked
//! against the bytes that remain before anything is reserved.

use bytes::Bytes;

pub const KEY_OFFSET_V0: i16 = 0;
pub const KEY_OFFSET_V1: i16 = 1;
pub const KEY_GROUP: i16 = 2;
const OFFSET_VALUE_WRITTEN: i16 = 3;
const GROUP_VALUE_WRITTEN: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct DecodeError(pub &'static str);

/// What a `__consumer_offsets` key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// A record type of another coordinator (key version given).
    Other(i16),
}

/// A committed offset (`OffsetCommitValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only in v1 values (explicit retention of OffsetCommit v2–v4); -1 otherwise.
    pub expire_timestamp_ms: i64,
}

/// One member in a `GroupMetadataValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's state as of its last completed rebalance (`GroupMetadataValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// The `__consumer_offsets` partition that holds a group: Kafka's
/// `Utils.abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode`
/// over UTF-16 code units, so a group maps to the same partition as in Kafka.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Utils.abs: Integer.MIN_VALUE maps to 0.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

pub fn encode_offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + group.len() + topic.len());
    out.extend_from_slice(&KEY_OFFSET_V1.to_be_bytes());
    put_str(&mut out, group);
    put_str(&mut out, topic);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

pub fn encode_group_key(group: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + group.len());
    out.extend_from_slice(&KEY_GROUP.to_be_bytes());
    put_str(&mut out, group);
    out
}

pub fn decode_key(buf: &[u8]) -> Result<OffsetsKey, DecodeError> {
    let mut r = Reader::new(buf);
    let version = r.i16()?;
    match version {
        KEY_OFFSET_V0 | KEY_OFFSET_V1 => Ok(OffsetsKey::Offset {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        }),
        KEY_GROUP => Ok(OffsetsKey::Group { group: r.string()? }),
        other => Ok(OffsetsKey::Other(other)),
    }
}

pub fn encode_offset_value(v: &OffsetValue) -> Vec<u8> {
    if v.expire_timestamp_ms >= 0 {
        // Kafka writes v1 (no leader epoch, with the expire timestamp) for a
        // commit with an explicit retention (OffsetCommit v2-v4).
        let mut out = Vec::with_capacity(34 + v.metadata.len());
        out.extend_from_slice(&1i16.to_be_bytes());
        out.extend_from_slice(&v.offset.to_be_bytes());
        put_str(&mut out, &v.metadata);
        out.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&v.expire_timestamp_ms.to_be_bytes());
        return out;
    }
    let mut out = Vec::with_capacity(26 + v.metadata.len());
    out.extend_from_slice(&OFFSET_VALUE_WRITTEN.to_be_bytes());
    out.extend_from_slice(&v.offset.to_be_bytes());
    out.extend_from_slice(&v.leader_epoch.to_be_bytes());
    put_str(&mut out, &v.metadata);
    out.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
    out
}

pub fn decode_offset_value(buf: &[u8]) -> Result<OffsetValue, DecodeError> {
    let mut r = Reader::new(buf);
    let version = r.i16()?;
    let flexible = version >= 4;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = if flexible {
        r.compact_string()?
    } else {
        r.string()?
    };
    let commit_timestamp_ms = r.i64()?;
    let expire_timestamp_ms = if version == 1 { r.i64()? } else { -1 };
    if flexible {
        r.skip_tagged_fields()?;
    }
    if version > 4 {
        return Err(DecodeError("unknown offset value version"));
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        expire_timestamp_ms,
    })
}

pub fn encode_group_value(v: &GroupValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&GROUP_VALUE_WRITTEN.to_be_bytes());
    put_str(&mut out, &v.protocol_type);
    out.extend_from_slice(&v.generation_id.to_be_bytes());
    put_opt_str(&mut out, v.protocol_name.as_deref());
    put_opt_str(&mut out, v.leader.as_deref());
    out.extend_from_slice(&v.current_state_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(v.members.len() as i32).to_be_bytes());
    for m in &v.members {
        put_str(&mut out, &m.member_id);
        put_opt_str(&mut out, m.group_instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out
}

pub fn decode_group_value(buf: &[u8]) -> Result<GroupValue, DecodeError> {
    let mut r = Reader::new(buf);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(DecodeError("unknown group value version"));
    }
    let flexible = version >= 4;
    let protocol_type = r.str_v(flexible)?;
    let generation_id = r.i32()?;
    let protocol_name = r.opt_str_v(flexible)?;
    let leader = r.opt_str_v(flexible)?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.array_len(flexible)?;
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = r.str_v(flexible)?;
        let group_instance_id = if version >= 3 {
            r.opt_str_v(flexible)?
        } else {
            None
        };
        let client_id = r.str_v(flexible)?;
        let client_host = r.str_v(flexible)?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes_v(flexible)?;
        let assignment = r.bytes_v(flexible)?;
        if flexible {
            r.skip_tagged_fields()?;
        }
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(GroupValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.extend_from_slice(&(len as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?
            .try_into()
            .map_err(|_| DecodeError("truncated"))
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn uvarint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?.first().copied().unwrap_or(0);
            value |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("varint too long"))
    }

    fn utf8(&mut self, len: usize) -> Result<String, DecodeError> {
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.opt_string()?
            .ok_or(DecodeError("null where a string is required"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.utf8(len as usize).map(Some)
    }

    fn compact_string(&mut self) -> Result<String, DecodeError> {
        self.opt_compact_string()?
            .ok_or(DecodeError("null where a string is required"))
    }

    fn opt_compact_string(&mut self) -> Result<Option<String>, DecodeError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        self.utf8((n - 1) as usize).map(Some)
    }

    fn str_v(&mut self, flexible: bool) -> Result<String, DecodeError> {
        if flexible {
            self.compact_string()
        } else {
            self.string()
        }
    }

    fn opt_str_v(&mut self, flexible: bool) -> Result<Option<String>, DecodeError> {
        if flexible {
            self.opt_compact_string()
        } else {
            self.opt_string()
        }
    }

    fn bytes_v(&mut self, flexible: bool) -> Result<Bytes, DecodeError> {
        let len = if flexible {
            (self.uvarint()? as usize)
                .checked_sub(1)
                .ok_or(DecodeError("null bytes"))?
        } else {
            usize::try_from(self.i32()?).map_err(|_| DecodeError("negative bytes length"))?
        };
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    /// An array count, checked against the bytes left (each element takes at
    /// least one byte) so a corrupt count cannot make us loop for long.
    fn array_len(&mut self, flexible: bool) -> Result<usize, DecodeError> {
        let n = if flexible {
            (self.uvarint()? as usize)
                .checked_sub(1)
                .ok_or(DecodeError("null array"))?
        } else {
            usize::try_from(self.i32()?).map_err(|_| DecodeError("negative array length"))?
        };
        if n > self.buf.len().saturating_sub(self.pos) {
            return Err(DecodeError("array count larger than the record"));
        }
        Ok(n)
    }

    fn skip_tagged_fields(&mut self) -> Result<(), DecodeError> {
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partition_matches_java_string_hash_code() {
        // "".hashCode() == 0; "a".hashCode() == 97; "hello".hashCode() == 99162322.
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 97 % 50);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Utils.abs gives 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Negative hash: "zzzzzzzzzz".hashCode() == -1_066_265_994 (wrapping).
        let h: i32 = "zzzzzzzzzz"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
        assert!(h < 0);
        assert_eq!(partition_for("zzzzzzzzzz", 50), h.abs() % 50);
    }

    #[test]
    fn keys_round_trip() {
        let k = encode_offset_key("g", "t", 7);
        assert_eq!(
            decode_key(&k),
            Ok(OffsetsKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7
            })
        );
        assert_eq!(
            decode_key(&encode_group_key("grp")),
            Ok(OffsetsKey::Group {
                group: "grp".into()
            })
        );
        assert_eq!(decode_key(&[0, 5, 1, 2]), Ok(OffsetsKey::Other(5)));
    }

    #[test]
    fn offset_value_v3_layout_and_older_versions() {
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: -1,
        };
        let enc = encode_offset_value(&v);
        assert_eq!(
            enc,
            [
                &[0, 3][..],
                &42i64.to_be_bytes(),
                &3i32.to_be_bytes(),
                &[0, 1, b'm'],
                &1000i64.to_be_bytes()
            ]
            .concat()
        );
        assert_eq!(decode_offset_value(&enc), Ok(v));
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let v1 = [
            &[0, 1][..],
            &5i64.to_be_bytes(),
            &[0, 0],
            &7i64.to_be_bytes(),
            &9i64.to_be_bytes(),
        ]
        .concat();
        let d = decode_offset_value(&v1).expect("v1");
        assert_eq!(
            (
                d.offset,
                d.leader_epoch,
                d.commit_timestamp_ms,
                d.expire_timestamp_ms
            ),
            (5, -1, 7, 9)
        );
        // v4: flexible, compact string, tagged fields.
        let v4 = [
            &[0, 4][..],
            &5i64.to_be_bytes(),
            &2i32.to_be_bytes(),
            &[2, b'x'],
            &7i64.to_be_bytes(),
            &[0],
        ]
        .concat();
        let d = decode_offset_value(&v4).expect("v4");
        assert_eq!((d.offset, d.leader_epoch, d.metadata.as_str()), (5, 2, "x"));
    }

    fn sample_group() -> GroupValue {
        GroupValue {
            protocol_type: "consumer".into(),
            generation_id: 4,
            protocol_name: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp_ms: 123,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        }
    }

    #[test]
    fn an_explicit_retention_is_written_as_v1_and_read_back() {
        let v = OffsetValue {
            offset: 9,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp_ms: 1_000,
            expire_timestamp_ms: 61_000,
        };
        let enc = encode_offset_value(&v);
        assert_eq!(&enc[..2], &[0, 1]);
        assert_eq!(decode_offset_value(&enc), Ok(v));
    }

    #[test]
    fn group_value_round_trips() {
        let g = sample_group();
        assert_eq!(decode_group_value(&encode_group_value(&g)), Ok(g));
    }

    #[test]
    fn huge_member_count_is_an_error_not_an_allocation() {
        let mut enc = encode_group_value(&GroupValue {
            members: vec![],
            ..sample_group()
        });
        let at = enc.len() - 4;
        enc[at..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_group_value(&enc).is_err());
    }

    proptest! {
        #[test]
        fn decoding_any_prefix_or_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_key(&data);
            let _ = decode_offset_value(&data);
            let _ = decode_group_value(&data);
        }

        #[test]
        fn truncated_group_values_are_errors(cut in 0usize..100) {
            let enc = encode_group_value(&sample_group());
            if cut < enc.len() {
                prop_assert!(decode_group_value(&enc[..cut]).is_err());
            }
        }
    }
}
