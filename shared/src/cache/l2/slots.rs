//! Which cluster node serves which hash slot, read from `CLUSTER SLOTS`, so a batch becomes
//! one pipeline per node (its commands each within one slot) instead of one per slot: at most
//! as many round trips as there are masters, and one on ElastiCache Serverless, whose single
//! endpoint serves every slot.

use redis::Value;

/// The masters and the slot ranges each serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotOwners {
    /// `(first slot, last slot, index into nodes)`.
    ranges: Vec<(u16, u16, usize)>,
    /// `(host, port)` of each master.
    nodes: Vec<(String, u16)>,
}

impl SlotOwners {
    /// Reads a `CLUSTER SLOTS` reply: `[[first, last, [host, port, id, ...], replicas...], ...]`.
    /// `None` if it is not one.
    pub fn parse(reply: &Value) -> Option<SlotOwners> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut owners = SlotOwners {
            ranges: Vec::with_capacity(ranges.len()),
            nodes: Vec::new(),
        };
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
                Value::SimpleString(text) => text.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            // An unknown endpoint (`""` or `?`: clients are to use the address they
            // connected to): leave routing to the client.
            if host.is_empty() || host == "?" {
                return None;
            }
            let node = (host, u16::try_from(*port).ok()?);
            let index = match owners.nodes.iter().position(|n| *n == node) {
                Some(index) => index,
                None => {
                    owners.nodes.push(node);
                    owners.nodes.len() - 1
                }
            };
            owners.ranges.push((
                u16::try_from(*first).ok()?,
                u16::try_from(*last).ok()?,
                index,
            ));
        }
        Some(owners)
    }

    /// The index of the node serving `slot`.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, node)| *node)
    }

    /// `(host, port)` of node `index`.
    pub fn node(&self, index: usize) -> &(String, u16) {
        &self.nodes[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: i64, last: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn slots_map_to_their_masters() {
        let reply = Value::Array(vec![
            range(0, 5460, "10.0.0.1", 6379),
            range(5461, 10922, "10.0.0.2", 6379),
            range(10923, 16383, "10.0.0.1", 6379),
        ]);
        let owners = SlotOwners::parse(&reply).unwrap();
        assert_eq!(owners.owner(0), Some(0));
        assert_eq!(owners.owner(6000), Some(1));
        assert_eq!(owners.owner(16383), Some(0), "one node, two ranges");
        assert_eq!(owners.node(1), &("10.0.0.2".to_owned(), 6379));
        assert_eq!(SlotOwners::parse(&Value::Int(1)), None);
        assert_eq!(
            SlotOwners::parse(&Value::Array(vec![range(0, 16383, "?", 6379)])),
            None
        );
        assert_eq!(
            SlotOwners::parse(&Value::Array(vec![Value::Array(vec![Value::Int(0)])])),
            None
        );
    }
}
