//! GTID bookkeeping for both flavours: MariaDB's `domain-server-seq` state
//! (with the parsers of its GTID and GTID_LIST events, which `mysql_async`
//! leaves undecoded) and MySQL's `uuid:interval` sets.
//!
//! The source tracks the executed GTID set itself, transaction by
//! transaction, so that the checkpoint's `gtid_set` always names exactly
//! what was delivered. This module is pure (no I/O) and must never guess:
//! malformed input is an error naming what was read.

use std::collections::BTreeMap;
use std::fmt;

use mysql_async::binlog::events::{GtidEvent, PreviousGtidsEvent};
use mysql_async::Sid;

/// MariaDB GTID event type code.
pub const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB GTID_LIST event type code.
pub const MARIADB_GTID_LIST_EVENT: u8 = 163;
/// MariaDB ANNOTATE_ROWS event type code.
pub const MARIADB_ANNOTATE_ROWS_EVENT: u8 = 160;
/// MariaDB BINLOG_CHECKPOINT event type code.
pub const MARIADB_BINLOG_CHECKPOINT_EVENT: u8 = 161;

/// `FL_STANDALONE`: the event group has no BEGIN/COMMIT (a DDL statement).
pub const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;

/// One MariaDB GTID `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtid {
    /// Replication domain.
    pub domain: u32,
    /// Originating server id.
    pub server: u32,
    /// Sequence number.
    pub seq: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// A decoded MariaDB GTID event (the start of an event group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtidEvent {
    /// The GTID.
    pub gtid: MariaGtid,
    /// `flags2` byte.
    pub flags: u8,
}

impl MariaGtidEvent {
    /// True for a standalone group (DDL: no BEGIN, no XID).
    pub fn standalone(&self) -> bool {
        self.flags & FL_STANDALONE != 0
    }
}

/// Parses the body of a MariaDB GTID event (type 162): `seq_no` u64,
/// `domain_id` u32, `flags2` u8, then optional fields. `server_id` comes from
/// the event header.
pub fn parse_mariadb_gtid(body: &[u8], server_id: u32) -> Result<MariaGtidEvent, String> {
    if body.len() < 13 {
        return Err(format!("MariaDB GTID event too short ({} bytes, need 13)", body.len()));
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let domain = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    let flags = body[12];
    if flags & FL_GROUP_COMMIT_ID != 0 && body.len() < 21 {
        return Err("MariaDB GTID event announces a commit id but is too short".into());
    }
    Ok(MariaGtidEvent { gtid: MariaGtid { domain, server: server_id, seq }, flags })
}

/// Parses the body of a MariaDB GTID_LIST event (type 163): a count (low 28
/// bits) then `(domain u32, server u32, seq u64)` triples.
pub fn parse_mariadb_gtid_list(body: &[u8]) -> Result<Vec<MariaGtid>, String> {
    if body.len() < 4 {
        return Err("MariaDB GTID_LIST event too short".into());
    }
    let count = (u32::from_le_bytes(body[0..4].try_into().expect("4 bytes")) & 0x0fff_ffff) as usize;
    let need = 4 + count * 16;
    if body.len() < need {
        return Err(format!("MariaDB GTID_LIST event announces {count} GTIDs but has {} bytes", body.len()));
    }
    Ok((0..count)
        .map(|i| {
            let o = 4 + i * 16;
            MariaGtid {
                domain: u32::from_le_bytes(body[o..o + 4].try_into().expect("4 bytes")),
                server: u32::from_le_bytes(body[o + 4..o + 8].try_into().expect("4 bytes")),
                seq: u64::from_le_bytes(body[o + 8..o + 16].try_into().expect("8 bytes")),
            }
        })
        .collect())
}

/// MariaDB replication state: the last GTID per domain (`0-1-42,1-2-7`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaGtidState {
    domains: BTreeMap<u32, MariaGtid>,
}

impl MariaGtidState {
    /// Parses `D-S-N[,D-S-N...]` (empty string: empty state).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut state = MariaGtidState::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let nums: Vec<&str> = part.split('-').collect();
            let bad = || format!("{part:?} is not a MariaDB GTID (domain-server-seq, e.g. 0-1-42)");
            if nums.len() != 3 {
                return Err(bad());
            }
            let gtid = MariaGtid {
                domain: nums[0].parse().map_err(|_| bad())?,
                server: nums[1].parse().map_err(|_| bad())?,
                seq: nums[2].parse().map_err(|_| bad())?,
            };
            state.domains.insert(gtid.domain, gtid);
        }
        Ok(state)
    }

    /// Records an executed GTID.
    pub fn apply(&mut self, gtid: MariaGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    /// The first GTID of `list` (a binlog file's starting state) that is
    /// ahead of this state in a domain this state knows: proof that
    /// transactions after this state are missing from that file on.
    pub fn gap_before(&self, list: &[MariaGtid]) -> Option<MariaGtid> {
        list.iter().find(|g| self.domains.get(&g.domain).is_some_and(|mine| mine.seq < g.seq)).copied()
    }

    /// The GTIDs of the state, one per domain.
    pub fn gtids(&self) -> Vec<MariaGtid> {
        self.domains.values().copied().collect()
    }

    /// True when no domain is known.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

impl fmt::Display for MariaGtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

/// Formats 16 bytes as a lowercase hyphenated UUID.
pub fn uuid_string(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A MySQL GTID set: per source (`uuid` or `uuid:tag`) a sorted list of
/// closed intervals of transaction numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    sources: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    /// Parses MySQL's text form, e.g. `3E11FA47-...:1-5:7,uuid2:1-3`
    /// (whitespace and newlines, as `@@gtid_executed` prints them, are ignored).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = MysqlGtidSet::default();
        let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        for part in cleaned.split(',').filter(|p| !p.is_empty()) {
            let bad = |why: &str| format!("{part:?} is not a MySQL GTID set entry (uuid:1-42): {why}");
            let mut fields = part.split(':');
            let uuid = fields.next().unwrap_or_default().to_ascii_lowercase();
            if uuid.len() != 36 || uuid.chars().filter(|c| *c == '-').count() != 4 {
                return Err(bad("bad uuid"));
            }
            let mut key = uuid;
            let mut any = false;
            for f in fields {
                if f.chars().next().is_some_and(|c| !c.is_ascii_digit()) {
                    // A tag (MySQL 8.4): `uuid:tag:1-5`.
                    key = format!("{}:{}", key.split(':').next().unwrap_or_default(), f.to_ascii_lowercase());
                    continue;
                }
                let (a, b) = match f.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (f, f),
                };
                let a: u64 = a.parse().map_err(|_| bad("bad interval"))?;
                let b: u64 = b.parse().map_err(|_| bad("bad interval"))?;
                if a == 0 || b < a {
                    return Err(bad("intervals start at 1 and must not be reversed"));
                }
                set.add_range(&key, a, b);
                any = true;
            }
            if !any {
                return Err(bad("no interval"));
            }
        }
        Ok(set)
    }

    /// Adds one transaction number.
    pub fn add(&mut self, source: &str, gno: u64) {
        self.add_range(source, gno, gno);
    }

    fn add_range(&mut self, source: &str, a: u64, b: u64) {
        let list = self.sources.entry(source.to_string()).or_default();
        list.push((a, b));
        list.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(list.len());
        for &(s, e) in list.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *list = merged;
    }

    /// Records the GTID of a MySQL GTID event.
    pub fn apply_event(&mut self, ev: &GtidEvent) {
        let mut key = uuid_string(&ev.sid());
        if let Some(tag) = ev.tag() {
            key = format!("{key}:{}", tag.as_str().to_ascii_lowercase());
        }
        self.add(&key, ev.gno());
    }

    /// The GTID text of a MySQL GTID event (`uuid:gno`).
    pub fn event_gtid(ev: &GtidEvent) -> String {
        match ev.tag() {
            Some(tag) => format!("{}:{}:{}", uuid_string(&ev.sid()), tag.as_str(), ev.gno()),
            None => format!("{}:{}", uuid_string(&ev.sid()), ev.gno()),
        }
    }

    /// The set described by a PREVIOUS_GTIDS event.
    pub fn from_previous(ev: &PreviousGtidsEvent<'_>) -> Self {
        let mut set = MysqlGtidSet::default();
        for sid in ev.sids() {
            let mut key = uuid_string(&sid.uuid());
            if let Some(tag) = sid.tag() {
                key = format!("{key}:{}", tag.as_str().to_ascii_lowercase());
            }
            for iv in sid.intervals() {
                // GnoInterval ends are exclusive.
                if iv.end() > iv.start() {
                    set.add_range(&key, iv.start(), iv.end() - 1);
                }
            }
        }
        set
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The set as `mysql_async` SIDs for `COM_BINLOG_DUMP_GTID`.
    pub fn to_sids(&self) -> Result<Vec<Sid<'static>>, String> {
        self.to_string()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Sid<'static>>().map_err(|e| format!("GTID set entry {s:?}: {e}")))
            .collect()
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (src, ivs)) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(src)?;
            for (a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_gtid_event_bytes() {
        // seq 42, domain 0, flags2 = FL_STANDALONE.
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(0x01);
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding as MariaDB writes it
        let ev = parse_mariadb_gtid(&body, 1).unwrap();
        assert_eq!(ev.gtid.to_string(), "0-1-42");
        assert!(ev.standalone());
        // With a group commit id.
        let mut body = 7u64.to_le_bytes().to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(FL_GROUP_COMMIT_ID);
        body.extend_from_slice(&99u64.to_le_bytes());
        let ev = parse_mariadb_gtid(&body, 5).unwrap();
        assert_eq!(ev.gtid, MariaGtid { domain: 3, server: 5, seq: 7 });
        assert!(!ev.standalone());
        assert!(parse_mariadb_gtid(&body[..10], 1).is_err());
    }

    #[test]
    fn mariadb_gtid_list_bytes() {
        let mut body = 2u32.to_le_bytes().to_vec();
        for (d, s, n) in [(0u32, 1u32, 42u64), (1, 2, 7)] {
            body.extend_from_slice(&d.to_le_bytes());
            body.extend_from_slice(&s.to_le_bytes());
            body.extend_from_slice(&n.to_le_bytes());
        }
        let list = parse_mariadb_gtid_list(&body).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].to_string(), "1-2-7");
        assert!(parse_mariadb_gtid_list(&body[..20]).is_err());
    }

    #[test]
    fn mariadb_state() {
        let mut st = MariaGtidState::parse("0-1-42, 1-2-7").unwrap();
        st.apply(MariaGtid { domain: 0, server: 3, seq: 43 });
        assert_eq!(st.to_string(), "0-3-43,1-2-7");
        assert!(MariaGtidState::parse("").unwrap().is_empty());
        assert!(MariaGtidState::parse("0-1").unwrap_err().contains("domain-server-seq"));
        let list = [MariaGtid { domain: 0, server: 1, seq: 43 }, MariaGtid { domain: 5, server: 1, seq: 9 }];
        assert_eq!(st.gap_before(&list), None, "equal seq, unknown domain: no gap");
        let list = [MariaGtid { domain: 1, server: 2, seq: 8 }];
        assert_eq!(st.gap_before(&list), Some(list[0]));
    }

    #[test]
    fn mysql_sets() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut set = MysqlGtidSet::parse(&format!("{}:1-5:7,\n{u}:9", u.to_uppercase())).unwrap();
        assert_eq!(set.to_string(), format!("{u}:1-5:7:9"));
        set.add(u, 6);
        set.add(u, 8);
        assert_eq!(set.to_string(), format!("{u}:1-9"));
        set.add("00000000-0000-0000-0000-000000000001", 1);
        assert_eq!(set.to_string(), format!("00000000-0000-0000-0000-000000000001:1,{u}:1-9"));
        let sids = set.to_sids().unwrap();
        assert_eq!(sids.len(), 2);
        assert_eq!(sids[1].to_string(), format!("{u}:1-9"));
        assert!(MysqlGtidSet::parse("nonsense:1").is_err());
        assert!(MysqlGtidSet::parse(&format!("{u}:5-1")).is_err());
        assert!(MysqlGtidSet::parse("").unwrap().is_empty());
    }
}
