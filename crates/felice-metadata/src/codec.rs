//! Binary encoding of metadata records (big-endian, length-prefixed strings).
//! Decoding never panics: every read is bounds-checked and a short or
//! malformed payload is an error.

use crate::records::MetadataRecord;
use uuid::Uuid;

const TAG_REGISTER_BROKER: u8 = 1;
const TAG_TOPIC: u8 = 2;
const TAG_PARTITION: u8 = 3;
const TAG_TOPIC_CONFIG: u8 = 4;
const TAG_REMOVE_TOPIC: u8 = 5;
const TAG_PRODUCER_IDS: u8 = 6;
const TAG_CLUSTER_ID: u8 = 7;
const TAG_BROKER_REGISTRATION: u8 = 8;
const TAG_FENCE_BROKER: u8 = 9;
const TAG_UNFENCE_BROKER: u8 = 10;

/// Largest number of replicas a partition record may list (bounds decoding).
const MAX_REPLICAS: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("malformed metadata record: {0}")]
pub struct DecodeError(pub &'static str);

pub fn encode(record: &MetadataRecord, out: &mut Vec<u8>) {
    match record {
        MetadataRecord::RegisterBroker {
            node_id,
            host,
            port,
            rack,
        } => {
            out.push(TAG_REGISTER_BROKER);
            out.extend_from_slice(&node_id.to_be_bytes());
            put_str(out, host);
            out.extend_from_slice(&port.to_be_bytes());
            put_opt_str(out, rack.as_deref());
        }
        MetadataRecord::Topic { name, topic_id } => {
            out.push(TAG_TOPIC);
            put_str(out, name);
            out.extend_from_slice(topic_id.as_bytes());
        }
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas,
            isr,
            leader,
            leader_epoch,
            partition_epoch,
        } => {
            out.push(TAG_PARTITION);
            out.extend_from_slice(topic_id.as_bytes());
            out.extend_from_slice(&partition.to_be_bytes());
            put_ids(out, replicas);
            put_ids(out, isr);
            out.extend_from_slice(&leader.to_be_bytes());
            out.extend_from_slice(&leader_epoch.to_be_bytes());
            out.extend_from_slice(&partition_epoch.to_be_bytes());
        }
        MetadataRecord::TopicConfig {
            topic_id,
            key,
            value,
        } => {
            out.push(TAG_TOPIC_CONFIG);
            out.extend_from_slice(topic_id.as_bytes());
            put_str(out, key);
            put_opt_str(out, value.as_deref());
        }
        MetadataRecord::RemoveTopic { topic_id } => {
            out.push(TAG_REMOVE_TOPIC);
            out.extend_from_slice(topic_id.as_bytes());
        }
        MetadataRecord::ProducerIds {
            broker_id,
            broker_epoch,
            next_producer_id,
        } => {
            out.push(TAG_PRODUCER_IDS);
            out.extend_from_slice(&broker_id.to_be_bytes());
            out.extend_from_slice(&broker_epoch.to_be_bytes());
            out.extend_from_slice(&next_producer_id.to_be_bytes());
        }
        MetadataRecord::ClusterId { cluster_id } => {
            out.push(TAG_CLUSTER_ID);
            put_str(out, cluster_id);
        }
        MetadataRecord::BrokerRegistration {
            node_id,
            incarnation_id,
            broker_epoch,
            host,
            port,
            rack,
        } => {
            out.push(TAG_BROKER_REGISTRATION);
            out.extend_from_slice(&node_id.to_be_bytes());
            out.extend_from_slice(incarnation_id.as_bytes());
            out.extend_from_slice(&broker_epoch.to_be_bytes());
            put_str(out, host);
            out.extend_from_slice(&port.to_be_bytes());
            put_opt_str(out, rack.as_deref());
        }
        MetadataRecord::FenceBroker {
            node_id,
            broker_epoch,
        } => {
            out.push(TAG_FENCE_BROKER);
            out.extend_from_slice(&node_id.to_be_bytes());
            out.extend_from_slice(&broker_epoch.to_be_bytes());
        }
        MetadataRecord::UnfenceBroker {
            node_id,
            broker_epoch,
        } => {
            out.push(TAG_UNFENCE_BROKER);
            out.extend_from_slice(&node_id.to_be_bytes());
            out.extend_from_slice(&broker_epoch.to_be_bytes());
        }
    }
}

pub fn decode(buf: &[u8]) -> Result<MetadataRecord, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let record = match r.u8()? {
        TAG_REGISTER_BROKER => MetadataRecord::RegisterBroker {
            node_id: r.i32()?,
            host: r.string()?,
            port: r.i32()?,
            rack: r.opt_string()?,
        },
        TAG_TOPIC => MetadataRecord::Topic {
            name: r.string()?,
            topic_id: r.uuid()?,
        },
        TAG_PARTITION => MetadataRecord::Partition {
            topic_id: r.uuid()?,
            partition: r.i32()?,
            replicas: r.ids()?,
            isr: r.ids()?,
            leader: r.i32()?,
            leader_epoch: r.i32()?,
            partition_epoch: r.i32()?,
        },
        TAG_TOPIC_CONFIG => MetadataRecord::TopicConfig {
            topic_id: r.uuid()?,
            key: r.string()?,
            value: r.opt_string()?,
        },
        TAG_REMOVE_TOPIC => MetadataRecord::RemoveTopic {
            topic_id: r.uuid()?,
        },
        TAG_PRODUCER_IDS => MetadataRecord::ProducerIds {
            broker_id: r.i32()?,
            broker_epoch: r.i64()?,
            next_producer_id: r.i64()?,
        },
        TAG_CLUSTER_ID => MetadataRecord::ClusterId {
            cluster_id: r.string()?,
        },
        TAG_BROKER_REGISTRATION => MetadataRecord::BrokerRegistration {
            node_id: r.i32()?,
            incarnation_id: r.uuid()?,
            broker_epoch: r.i64()?,
            host: r.string()?,
            port: r.i32()?,
            rack: r.opt_string()?,
        },
        TAG_FENCE_BROKER => MetadataRecord::FenceBroker {
            node_id: r.i32()?,
            broker_epoch: r.i64()?,
        },
        TAG_UNFENCE_BROKER => MetadataRecord::UnfenceBroker {
            node_id: r.i32()?,
            broker_epoch: r.i64()?,
        },
        _ => return Err(DecodeError("unknown record type")),
    };
    if r.pos != buf.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(record)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[i32]) {
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
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
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| DecodeError("i32"))?;
        Ok(i32::from_be_bytes(b))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| DecodeError("i64"))?;
        Ok(i64::from_be_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(self.i32()? as u32)
    }
    fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        let b: [u8; 16] = self.take(16)?.try_into().map_err(|_| DecodeError("uuid"))?;
        Ok(Uuid::from_bytes(b))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("invalid utf-8"))
    }
    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            _ => Err(DecodeError("bad option tag")),
        }
    }
    fn ids(&mut self) -> Result<Vec<i32>, DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_REPLICAS {
            return Err(DecodeError("too many replicas"));
        }
        (0..n).map(|_| self.i32()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips_and_every_truncation_fails() {
        let id = Uuid::new_v4();
        let records = vec![
            MetadataRecord::RegisterBroker {
                node_id: 1,
                host: "127.0.0.1".into(),
                port: 9092,
                rack: Some("r1".into()),
            },
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 3,
                replicas: vec![1, 2],
                isr: vec![1],
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 5,
            },
            MetadataRecord::TopicConfig {
                topic_id: id,
                key: "retention.ms".into(),
                value: None,
            },
            MetadataRecord::RemoveTopic { topic_id: id },
            MetadataRecord::ProducerIds {
                broker_id: 1,
                broker_epoch: 7,
                next_producer_id: 2000,
            },
            MetadataRecord::ClusterId {
                cluster_id: "8iH9cJ0mTF2sBrR7Ln2Wxw".into(),
            },
            MetadataRecord::BrokerRegistration {
                node_id: 2,
                incarnation_id: id,
                broker_epoch: 41,
                host: "h".into(),
                port: 9092,
                rack: Some("r1".into()),
            },
            MetadataRecord::FenceBroker {
                node_id: 2,
                broker_epoch: 41,
            },
            MetadataRecord::UnfenceBroker {
                node_id: 2,
                broker_epoch: 41,
            },
        ];
        for record in records {
            let mut buf = Vec::new();
            encode(&record, &mut buf);
            assert_eq!(decode(&buf).ok(), Some(record.clone()));
            for cut in 0..buf.len() {
                assert!(decode(&buf[..cut]).is_err(), "cut at {cut} decoded");
            }
        }
    }
}
