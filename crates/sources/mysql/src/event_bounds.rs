//! Checks, before `mysql_common` decodes an event body, that the counts in
//! it fit in the bytes that follow them.
//!
//! `mysql_common` sizes some allocations by a count read from the event
//! (`Vec::with_capacity(count)`): the SID and interval counts of
//! PREVIOUS_GTIDS, and the variant counts of a TABLE_MAP's ENUM/SET string
//! metadata. A damaged or hostile event claiming billions of entries would
//! make it ask for terabytes, and a failed allocation aborts the process
//! (it cannot be caught). Found by the property tests (`fuzz_tests`). Each
//! entry takes at least one byte on the wire, so a count larger than the
//! bytes left is malformed, and is refused here with an error naming it.
//!
//! This module only reads bytes; it must never allocate by a count it read.

/// PREVIOUS_GTIDS_LOG_EVENT (MySQL).
const PREVIOUS_GTIDS: u8 = 35;
/// TABLE_MAP_EVENT.
const TABLE_MAP: u8 = 19;
/// Optional metadata field types whose values `mysql_common` collects by count.
const SET_STR_VALUE: u8 = 5;
const ENUM_STR_VALUE: u8 = 6;

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("{what}: needs {n} bytes, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u64_le(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    /// A MySQL length-encoded integer.
    fn lenenc(&mut self, what: &str) -> Result<u64, String> {
        let n = match self.u8(what)? {
            b @ 0..=0xfa => return Ok(u64::from(b)),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            b => return Err(format!("{what}: {b:#x} starts no length-encoded integer")),
        };
        let mut raw = [0u8; 8];
        raw[..n].copy_from_slice(self.take(n, what)?);
        Ok(u64::from_le_bytes(raw))
    }

    /// MySQL's serialization-library variable-length integer (the tag
    /// length of tagged GTIDs): the first byte's trailing ones count the
    /// bytes that follow.
    fn varlen(&mut self, what: &str) -> Result<u64, String> {
        let first = *self.0.first().ok_or_else(|| format!("{what}: no bytes left"))?;
        let ones = first.trailing_ones() as usize;
        if ones == 8 {
            self.take(1, what)?;
            return Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")));
        }
        let mut raw = [0u8; 8];
        raw[..=ones].copy_from_slice(self.take(ones + 1, what)?);
        Ok(u64::from_le_bytes(raw) >> (ones + 1))
    }

    /// Refuses `count` entries of at least `min_size` bytes each when the
    /// bytes left cannot hold them.
    fn fits(&self, count: u64, min_size: u64, what: &str) -> Result<usize, String> {
        match count.checked_mul(min_size) {
            Some(need) if need <= self.0.len() as u64 => Ok(count as usize),
            _ => Err(format!("{what} announces {count} entries but only {} bytes follow", self.0.len())),
        }
    }
}

/// Checks the counts in the body of an event of type `type_code` (other
/// types pass); the error says which count does not fit.
pub(crate) fn check(type_code: u8, body: &[u8]) -> Result<(), String> {
    match type_code {
        PREVIOUS_GTIDS => previous_gtids(&mut Bytes(body)),
        TABLE_MAP => table_map(&mut Bytes(body)),
        _ => Ok(()),
    }
}

fn previous_gtids(b: &mut Bytes<'_>) -> Result<(), String> {
    let what = "PREVIOUS_GTIDS event";
    let header = b.u64_le(what)?;
    let tagged = header >> 56 != 0;
    let n_sids = if tagged { (header >> 8) & ((1 << 48) - 1) } else { header & ((1 << 56) - 1) };
    // A SID takes at least its UUID (16) and interval count (8).
    let n_sids = b.fits(n_sids, 24, what)?;
    for _ in 0..n_sids {
        b.take(16, what)?;
        if tagged {
            let tag_len = b.varlen(what)?;
            let tag_len = b.fits(tag_len, 1, what)?;
            b.take(tag_len, what)?;
        }
        let n_intervals = b.u64_le(what)?;
        let n_intervals = b.fits(n_intervals, 16, what)?;
        b.take(n_intervals * 16, what)?;
    }
    Ok(())
}

fn table_map(b: &mut Bytes<'_>) -> Result<(), String> {
    let what = "TABLE_MAP event";
    b.take(6 + 2, what)?; // table id, flags
    for _ in 0..2 {
        let len = b.u8(what)? as usize; // database, then table name
        b.take(len + 1, what)?;
    }
    let columns = b.lenenc(what)?;
    let columns = b.fits(columns, 1, what)?;
    b.take(columns, what)?;
    let meta_len = b.lenenc(what)?;
    let meta_len = b.fits(meta_len, 1, what)?;
    b.take(meta_len, what)?;
    b.take(columns.div_ceil(8), what)?;
    // Optional metadata: (type, length, value) fields up to the end.
    while !b.0.is_empty() {
        let field = b.u8(what)?;
        let len = b.lenenc(what)?;
        let len = b.fits(len, 1, what)?;
        let mut value = Bytes(b.take(len, what)?);
        if field == SET_STR_VALUE || field == ENUM_STR_VALUE {
            let what = "TABLE_MAP ENUM/SET metadata";
            while !value.0.is_empty() {
                // Per column: a variant count, then each variant as a
                // length-encoded string (at least its length byte).
                let variants = value.lenenc(what)?;
                for _ in 0..value.fits(variants, 1, what)? {
                    let n = value.lenenc(what)?;
                    let n = value.fits(n, 1, what)?;
                    value.take(n, what)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_beyond_the_bytes_are_refused() {
        // PREVIOUS_GTIDS claiming 2^40 SIDs (the input that aborted the
        // property test: `mysql_common` asked for 13 TB).
        let mut body = (1u64 << 40).to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 24]);
        let e = check(PREVIOUS_GTIDS, &body).unwrap_err();
        assert!(e.contains("PREVIOUS_GTIDS") && e.contains("1099511627776 entries"), "{e}");
        // One SID claiming 2^60 intervals.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[7; 16]);
        body.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(check(PREVIOUS_GTIDS, &body).unwrap_err().contains("entries"));
        // A valid one passes: one SID, one interval.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[7; 16]);
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        check(PREVIOUS_GTIDS, &body).unwrap();
    }

    #[test]
    fn table_map_enum_variants_beyond_the_bytes_are_refused() {
        let mut body = vec![42, 0, 0, 0, 0, 0, 1, 0, 1, b'd', 0, 1, b't', 0, 1, 247, 2, 1, 1, 0];
        body.push(ENUM_STR_VALUE);
        let value = [0xfe, 0, 0, 0, 0, 0, 0, 0, 1]; // 2^56 variants
        body.push(value.len() as u8);
        body.extend_from_slice(&value);
        let e = check(TABLE_MAP, &body).unwrap_err();
        assert!(e.contains("ENUM/SET") && e.contains("entries"), "{e}");
        // The same event with one variant `a` passes.
        let n = body.len() - value.len() - 1;
        body.truncate(n);
        body.extend_from_slice(&[3, 1, 1, b'a']);
        check(TABLE_MAP, &body).unwrap();
    }
}
