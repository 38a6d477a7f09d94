//! DWARF struct member offsets, resolved in one pass over `.debug_info`.
//!
//! Go emits its type DIEs at the top level of compile units and names them with the full
//! import path (`net/http.Request`, `runtime.g`), so only top-level
//! `DW_TAG_structure_type` entries are examined; the walk stops once every wanted
//! `(type, field)` pair has an answer.

use gimli::{AttributeValue, DebugAbbrev, DebugInfo, DebugStr, EndianSlice, RunTimeEndian};

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// The three sections the walk needs, already decompressed.
pub struct Sections<'a> {
    pub info: &'a [u8],
    pub abbrev: &'a [u8],
    pub str: &'a [u8],
    pub endian: RunTimeEndian,
}

/// For each `(type_name, field)` in `wanted`, the member offset if found.
pub fn field_offsets(s: &Sections<'_>, wanted: &[(&str, &str)]) -> gimli::Result<Vec<Option<u64>>> {
    let mut out = vec![None; wanted.len()];
    // A type is only taken from its first definition; `done[i]` marks a pair whose type
    // has been seen (found or not), so the walk can stop when all are settled.
    let mut done = vec![false; wanted.len()];
    if wanted.is_empty() {
        return Ok(out);
    }
    let info = DebugInfo::new(s.info, s.endian);
    let abbrev = DebugAbbrev::new(s.abbrev, s.endian);
    let strs = DebugStr::new(s.str, s.endian);
    let mut units = info.units();
    while let Some(header) = units.next()? {
        let abbrevs = header.abbreviations(&abbrev)?;
        let mut tree = header.entries_tree(&abbrevs, None)?;
        let root = tree.root()?;
        let mut children = root.children();
        while let Some(child) = children.next()? {
            let entry = child.entry();
            if entry.tag() != gimli::DW_TAG_structure_type
                || entry.attr_value(gimli::DW_AT_declaration).is_some()
            {
                continue;
            }
            let Some(name) = entry
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| attr_str(v, &strs))
            else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(name.slice()) else {
                continue;
            };
            let hits: Vec<usize> = wanted
                .iter()
                .enumerate()
                .filter(|(i, (t, _))| !done[*i] && *t == name)
                .map(|(i, _)| i)
                .collect();
            if hits.is_empty() {
                continue;
            }
            let mut members = child.children();
            while let Some(member) = members.next()? {
                let m = member.entry();
                if m.tag() != gimli::DW_TAG_member {
                    continue;
                }
                let Some(field) = m
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| attr_str(v, &strs))
                else {
                    continue;
                };
                for &i in &hits {
                    if out[i].is_none() && wanted[i].1.as_bytes() == field.slice() {
                        out[i] = m
                            .attr_value(gimli::DW_AT_data_member_location)
                            .and_then(|v| member_location(&v));
                    }
                }
            }
            for &i in &hits {
                done[i] = true;
            }
            if done.iter().all(|d| *d) {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

fn attr_str<'a>(value: AttributeValue<Slice<'a>>, strs: &DebugStr<Slice<'a>>) -> Option<Slice<'a>> {
    match value {
        AttributeValue::String(s) => Some(s),
        AttributeValue::DebugStrRef(off) => strs.get_str(off).ok(),
        _ => None,
    }
}

/// A constant offset, or the DWARF 2 form `DW_OP_plus_uconst n`.
fn member_location(value: &AttributeValue<Slice<'_>>) -> Option<u64> {
    if let Some(v) = value.udata_value() {
        return Some(v);
    }
    if let AttributeValue::Exprloc(expr) = value {
        let bytes = expr.0.slice();
        if bytes.first() == Some(&gimli::DW_OP_plus_uconst.0) {
            let mut r = EndianSlice::new(bytes.get(1..)?, RunTimeEndian::Little);
            return gimli::Reader::read_uleb128(&mut r).ok();
        }
    }
    None
}
