//! `.gopclntab`: function addresses of binaries without `.symtab` (`-ldflags=-s`).
//!
//! Layout (Go 1.18+, magic `0xfffffff0`, and 1.20+, `0xfffffff1`; `runtime/symtab.go`
//! `pcHeader`, `cmd/link/internal/ld/pcln.go`): magic u32, two zero bytes, `minLC`,
//! `ptrSize`, then words `nfunc`, `nfiles`, `textStart`, and the offsets from the header
//! of `funcnametab`, `cutab`, `filetab`, `pctab` and `pclntab`. The functab at the
//! `pclntab` offset holds `nfunc` pairs `{entryoff u32, funcoff u32}` sorted by entry,
//! then one more `entryoff`: the end of the last function. Each `_func` (at `pclntab` +
//! `funcoff`) starts with `entryOff u32, nameOff i32`; the name is a NUL-terminated string
//! at `funcnametab + nameOff`. An entry is `text + entryoff`.
//!
//! The text start: Go 1.26 stopped writing `textStart` into the header (the word is
//! zero: it needed a dynamic relocation); the runtime has always used
//! `runtime.firstmoduledata.text`. A stripped binary has no symbol for that, so the
//! moduledata is found as the pointer-aligned word in a writable segment that points at
//! the header (`pcHeader` is its first field), and trusted only when its `funcnametab`,
//! `ftab`, `minpc` and `maxpc` agree with the table. When the header still carries the
//! text start (1.18-1.25) the two must agree.

use std::collections::HashMap;

use object::{Object, ObjectSection};

use crate::error::PclntabError;
use crate::{Segment, read_vaddr};

/// Go 1.20 and later.
const MAGIC_GO120: u32 = 0xffff_fff1;
/// Go 1.18 and 1.19: the same layout as 1.20.
const MAGIC_GO118: u32 = 0xffff_fff0;

/// Section names the Go and external linkers give the table (`cmd/internal/objfile`).
const SECTION_NAMES: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// Word indexes into `runtime.moduledata`, the same from Go 1.18 to 1.27: `pcHeader`, then
/// six slices of three words (`funcnametab`, `cutab`, `filetab`, `pctab`, `pclntable`,
/// `ftab`), `findfunctab`, `minpc`, `maxpc`, `text`.
const MD_PCHEADER: usize = 0;
const MD_FUNCNAMETAB: usize = 1;
const MD_FTAB: usize = 16;
const MD_FTAB_LEN: usize = 17;
const MD_MINPC: usize = 20;
const MD_MAXPC: usize = 21;
const MD_TEXT: usize = 22;
const MD_WORDS: usize = MD_TEXT + 1;

/// Longest function name accepted; real ones are far shorter.
const MAX_NAME: usize = 64 << 10;

/// Where the text start (the base of every functab entry) was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextStartSource {
    /// `runtime.firstmoduledata.text`, found through the word pointing at the header.
    Moduledata,
    /// The header's `textStart` word (Go 1.18-1.25) when no moduledata was found.
    Header,
}

/// Facts about a binary's pclntab, for tools such as `skyhook inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PclntabInfo {
    /// Link-time address of the header.
    pub vaddr: u64,
    pub magic: u32,
    /// Functions in the functab.
    pub nfunc: usize,
    /// Base of the functab's entry offsets.
    pub text_start: u64,
    pub text_start_source: TextStartSource,
    /// The header's own `textStart`; `None` when zero, as Go 1.26+ writes it.
    pub header_text_start: Option<u64>,
    /// Address of the `runtime.moduledata` that points at the header, when found.
    pub moduledata: Option<u64>,
}

/// Every function of the table by name: `(entry, size)`.
#[derive(Debug)]
pub(crate) struct Index {
    pub info: PclntabInfo,
    funcs: HashMap<String, (u64, u64)>,
}

impl Index {
    pub fn get(&self, name: &str) -> Option<(u64, u64)> {
        self.funcs.get(name).copied()
    }
}

/// Header fields, offsets already checked against the table's bytes.
#[derive(Debug)]
struct Header {
    magic: u32,
    ptr: usize,
    nfunc: usize,
    text_start: u64,
    funcnametab: usize,
    functab: usize,
}

/// Reads the table of `data` (a whole ELF file whose `PT_LOAD` segments are `segments`).
pub(crate) fn index(data: &[u8], segments: &[Segment]) -> Result<Index, PclntabError> {
    let obj = object::File::parse(data).map_err(|_| PclntabError::Corrupt("unreadable ELF"))?;
    let little = obj.is_little_endian();
    let section = SECTION_NAMES
        .iter()
        .find_map(|name| obj.section_by_name(name));
    if let Some(section) = section {
        let bytes = section
            .data()
            .map_err(|_| PclntabError::Corrupt("section is not in the file"))?;
        return build(data, segments, section.address(), bytes, little);
    }
    // External linkers may drop the section name (go1.21 with `-linkmode=external
    // -buildmode=pie` merges the table into the RELRO `.data.rel.ro`): look for a header
    // that parses fully, in the read-only segments first.
    let read_only = segments.iter().filter(|s| !s.writable);
    for seg in read_only.chain(segments.iter().filter(|s| s.writable)) {
        let Some(bytes) = read_vaddr(data, segments, seg.vaddr, seg.filesz) else {
            continue;
        };
        // pcHeader is pointer-aligned; 4 covers both pointer sizes.
        let skip = ((4 - seg.vaddr % 4) % 4) as usize;
        for off in (skip..bytes.len().saturating_sub(8)).step_by(4) {
            let Some(magic) = read_u32(bytes, off, little) else {
                break;
            };
            if magic != MAGIC_GO120 && magic != MAGIC_GO118 {
                continue;
            }
            let table = &bytes[off..];
            if parse_header(table, little).is_err() {
                continue;
            }
            if let Ok(index) = build(data, segments, seg.vaddr + off as u64, table, little) {
                return Ok(index);
            }
        }
    }
    Err(PclntabError::NotFound)
}

fn build(
    data: &[u8],
    segments: &[Segment],
    vaddr: u64,
    table: &[u8],
    little: bool,
) -> Result<Index, PclntabError> {
    let hdr = parse_header(table, little)?;
    let corrupt = PclntabError::Corrupt;
    let entry_off = |i: usize| {
        i.checked_mul(8)
            .and_then(|at| at.checked_add(hdr.functab))
            .and_then(|at| read_u32(table, at, little))
            .ok_or(corrupt("functab runs past the table"))
    };
    let first = if hdr.nfunc > 0 { entry_off(0)? } else { 0 };
    let end = entry_off(hdr.nfunc)?;

    let moduledata = find_moduledata(data, segments, vaddr, &hdr, first, end, little);
    let header_text_start = (hdr.text_start != 0).then_some(hdr.text_start);
    let (text_start, text_start_source) = match (moduledata, header_text_start) {
        (Some((_, md)), Some(h)) if md != h => {
            return Err(PclntabError::TextStartMismatch {
                header: h,
                moduledata: md,
            });
        }
        (Some((_, md)), _) => (md, TextStartSource::Moduledata),
        (None, Some(h)) => (h, TextStartSource::Header),
        (None, None) => return Err(PclntabError::NoTextStart),
    };
    if text_start.checked_add(u64::from(end)).is_none() {
        return Err(corrupt("functab end overflows the address space"));
    }

    let mut funcs = HashMap::with_capacity(hdr.nfunc);
    let mut prev = first;
    for i in 0..hdr.nfunc {
        let entry = prev;
        let next = entry_off(i + 1)?;
        if next < entry {
            return Err(corrupt("functab is not sorted"));
        }
        prev = next;
        let funcoff = i
            .checked_mul(8)
            .and_then(|at| at.checked_add(hdr.functab + 4))
            .and_then(|at| read_u32(table, at, little))
            .ok_or(corrupt("functab runs past the table"))?;
        let func = usize::try_from(funcoff)
            .ok()
            .and_then(|f| hdr.functab.checked_add(f))
            .ok_or(corrupt("_func offset overflows"))?;
        let (Some(func_entry), Some(name_off)) = (
            read_u32(table, func, little),
            func.checked_add(4)
                .and_then(|at| read_u32(table, at, little)),
        ) else {
            return Err(corrupt("_func runs past the table"));
        };
        if func_entry != entry {
            return Err(corrupt("_func entry differs from its functab entry"));
        }
        let name = usize::try_from(name_off as i32)
            .ok()
            .and_then(|n| hdr.funcnametab.checked_add(n))
            .and_then(|at| c_string(table, at))
            .ok_or(corrupt("function name runs past the table"))?;
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        // text_start + end does not overflow, so neither does any smaller entry.
        funcs
            .entry(name.to_owned())
            .or_insert((text_start + u64::from(entry), u64::from(next - entry)));
    }
    Ok(Index {
        info: PclntabInfo {
            vaddr,
            magic: hdr.magic,
            nfunc: hdr.nfunc,
            text_start,
            text_start_source,
            header_text_start,
            moduledata: moduledata.map(|(at, _)| at),
        },
        funcs,
    })
}

fn parse_header(table: &[u8], little: bool) -> Result<Header, PclntabError> {
    let corrupt = PclntabError::Corrupt;
    let magic = read_u32(table, 0, little).ok_or(corrupt("header truncated"))?;
    if magic != MAGIC_GO120 && magic != MAGIC_GO118 {
        return Err(PclntabError::Magic(magic));
    }
    let fixed = table.get(..8).ok_or(corrupt("header truncated"))?;
    if fixed[4] != 0 || fixed[5] != 0 {
        return Err(corrupt("header padding is not zero"));
    }
    if !matches!(fixed[6], 1 | 2 | 4) {
        return Err(corrupt("instruction size quantum is not 1, 2 or 4"));
    }
    let ptr = usize::from(fixed[7]);
    if ptr != 4 && ptr != 8 {
        return Err(corrupt("pointer size is not 4 or 8"));
    }
    let word =
        |i: usize| read_word(table, 8 + i * ptr, ptr, little).ok_or(corrupt("header truncated"));
    // An offset into the table, strictly after the header.
    let offset = |i: usize| -> Result<usize, PclntabError> {
        usize::try_from(word(i)?)
            .ok()
            .filter(|&o| o >= 8 + 8 * ptr && o < table.len())
            .ok_or(corrupt("header offset points outside the table"))
    };
    let nfunc = word(0)?;
    let text_start = word(2)?;
    let funcnametab = offset(3)?;
    let functab = offset(7)?;
    // Each function takes 8 functab bytes at least.
    let nfunc = usize::try_from(nfunc)
        .ok()
        .filter(|&n| n <= (table.len() - functab) / 8)
        .ok_or(corrupt("function count exceeds the table"))?;
    Ok(Header {
        magic,
        ptr,
        nfunc,
        text_start,
        funcnametab,
        functab,
    })
}

/// Finds `runtime.moduledata` by its first word, the header's address, and returns its
/// address and `text` once its other fields agree with the table.
fn find_moduledata(
    data: &[u8],
    segments: &[Segment],
    header_vaddr: u64,
    hdr: &Header,
    first: u32,
    end: u32,
    little: bool,
) -> Option<(u64, u64)> {
    let ptr = hdr.ptr;
    let size = MD_WORDS * ptr;
    let expect = |at: usize| header_vaddr.checked_add(at as u64);
    let funcnametab = expect(hdr.funcnametab)?;
    let ftab = expect(hdr.functab)?;
    let nfunc = hdr.nfunc as u64;
    for seg in segments.iter().filter(|s| s.writable) {
        let Some(bytes) = read_vaddr(data, segments, seg.vaddr, seg.filesz) else {
            continue;
        };
        let skip = ((ptr as u64 - seg.vaddr % ptr as u64) % ptr as u64) as usize;
        let mut off = skip;
        while off + size <= bytes.len() {
            let word = |i: usize| read_word(bytes, off + i * ptr, ptr, little);
            if word(MD_PCHEADER) == Some(header_vaddr) {
                let valid = (|| {
                    let text = word(MD_TEXT)?;
                    let ok = word(MD_FUNCNAMETAB)? == funcnametab
                        && word(MD_FTAB)? == ftab
                        && word(MD_FTAB_LEN)? == nfunc + 1
                        && Some(word(MD_MINPC)?) == text.checked_add(u64::from(first))
                        && Some(word(MD_MAXPC)?) == text.checked_add(u64::from(end));
                    ok.then_some(text)
                })();
                if let Some(text) = valid {
                    return Some((seg.vaddr + off as u64, text));
                }
            }
            off += ptr;
        }
    }
    None
}

fn read_u32(b: &[u8], at: usize, little: bool) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(bytes)
    } else {
        u32::from_be_bytes(bytes)
    })
}

fn read_word(b: &[u8], at: usize, size: usize, little: bool) -> Option<u64> {
    if size == 4 {
        return read_u32(b, at, little).map(u64::from);
    }
    let bytes: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(if little {
        u64::from_le_bytes(bytes)
    } else {
        u64::from_be_bytes(bytes)
    })
}

/// The bytes at `at` up to (not including) the next NUL.
fn c_string(b: &[u8], at: usize) -> Option<&[u8]> {
    let rest = b.get(at..)?;
    let rest = &rest[..rest.len().min(MAX_NAME)];
    let len = rest.iter().position(|&c| c == 0)?;
    Some(&rest[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian 64-bit table with `names` at entry offsets `entries` and the end
    /// offset `end`, text start `text`.
    fn table(text: u64, funcs: &[(&str, u32)], end: u32) -> Vec<u8> {
        let ptr = 8usize;
        let hdr_len = 8 + 8 * ptr;
        let mut names = Vec::new();
        let mut name_offs = Vec::new();
        for (name, _) in funcs {
            name_offs.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let funcnametab = hdr_len;
        let functab = funcnametab + names.len();
        let ft_len = (2 * funcs.len() + 1) * 4;
        let mut t = Vec::new();
        t.extend_from_slice(&MAGIC_GO120.to_le_bytes());
        t.extend_from_slice(&[0, 0, 1, 8]);
        for w in [
            funcs.len() as u64,
            0,
            text,
            funcnametab as u64,
            functab as u64,
            functab as u64,
            functab as u64,
            functab as u64,
        ] {
            t.extend_from_slice(&w.to_le_bytes());
        }
        t.extend_from_slice(&names);
        for (i, (_, entry)) in funcs.iter().enumerate() {
            t.extend_from_slice(&entry.to_le_bytes());
            let funcoff = (ft_len + i * 8) as u32;
            t.extend_from_slice(&funcoff.to_le_bytes());
        }
        t.extend_from_slice(&end.to_le_bytes());
        for (i, (_, entry)) in funcs.iter().enumerate() {
            t.extend_from_slice(&entry.to_le_bytes());
            t.extend_from_slice(&name_offs[i].to_le_bytes());
        }
        t
    }

    fn build_alone(t: &[u8]) -> Result<Index, PclntabError> {
        build(&[], &[], 0x1000, t, true)
    }

    #[test]
    fn synthetic_table_from_the_header_text_start() {
        let t = table(0x40_0000, &[("main.a", 0), ("main.b", 0x40)], 0x70);
        let index = build_alone(&t).unwrap();
        assert_eq!(index.get("main.a"), Some((0x40_0000, 0x40)));
        assert_eq!(index.get("main.b"), Some((0x40_0040, 0x30)));
        assert_eq!(index.get("main.c"), None);
        assert_eq!(index.info.text_start_source, TextStartSource::Header);
        assert_eq!(index.info.moduledata, None);
    }

    #[test]
    fn no_text_start_is_an_error() {
        let t = table(0, &[("main.a", 0)], 0x10);
        assert_eq!(build_alone(&t).unwrap_err(), PclntabError::NoTextStart);
    }

    #[test]
    fn every_truncation_and_byte_flip_is_handled() {
        let t = table(0x40_0000, &[("main.a", 0), ("main.b", 0x40)], 0x70);
        for len in 0..t.len() {
            let _ = build_alone(&t[..len]);
        }
        for i in 0..t.len() {
            for bit in 0..8 {
                let mut c = t.clone();
                c[i] ^= 1 << bit;
                let _ = build_alone(&c);
            }
        }
    }

    #[test]
    fn unsorted_functab_is_corrupt() {
        let t = table(0x40_0000, &[("main.a", 0x40), ("main.b", 0)], 0x70);
        assert_eq!(
            build_alone(&t).unwrap_err(),
            PclntabError::Corrupt("functab is not sorted")
        );
    }

    #[test]
    fn old_magic_is_named() {
        let mut t = table(0x40_0000, &[("main.a", 0)], 0x10);
        t[..4].copy_from_slice(&0xffff_fffa_u32.to_le_bytes());
        let err = build_alone(&t).unwrap_err();
        assert_eq!(err.to_string(), "unsupported pclntab magic 0xfffffffa");
    }
}
