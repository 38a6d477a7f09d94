//! Go binary inspection: ELF facts, `.go.buildinfo`, symbols, RET sites and DWARF struct
//! offsets.
//!
//! Std only and synchronous, so both the agent and the preload shim can use it. Input is
//! treated as hostile: every read is bounds-checked and failures are [`Error`]s.

mod buildinfo;
mod dwarf;
mod error;
pub mod offsets;
mod pclntab;
mod ret;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;
use object::elf;
use object::read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

pub use buildinfo::{BuildInfo, Module, parse_go_version};
pub use error::PclntabError;
pub use error::{BuildInfoError, Error};
pub use offsets::{FieldResolution, Lookup, OffsetSource, OffsetsDb};
pub use pclntab::{PclntabInfo, TextStartSource};

/// Parses a `.go.buildinfo` region. `read_at(vaddr, len)` resolves the pointers of the
/// pre-1.18 form; the inline form never calls it. Exposed for tests and tools.
pub fn parse_build_info<'a>(
    data: &[u8],
    read_at: impl Fn(u64, u64) -> Option<&'a [u8]>,
) -> Result<BuildInfo, BuildInfoError> {
    buildinfo::parse(data, read_at)
}

/// The instruction set of a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
    /// Any other ELF `e_machine`.
    Other(u16),
}

/// How the binary was linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildMode {
    /// `ET_DYN` executable: addresses are relative to a load base chosen at run time.
    pub pie: bool,
    /// Neither `PT_INTERP` nor `DT_NEEDED`: `LD_PRELOAD` cannot reach it.
    pub static_linked: bool,
    /// No `.symtab` (built with `-ldflags=-s` or stripped): [`GoBinary::function`] falls
    /// back to `.gopclntab`.
    pub stripped: bool,
    /// `.debug_info` (or `.zdebug_info`) is present.
    pub has_dwarf: bool,
}

/// A function, from `.symtab` or `.gopclntab` (see [`SymbolSource`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Function {
    pub name: String,
    /// Link-time virtual address.
    pub address: u64,
    pub size: u64,
}

/// One `PT_LOAD` segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    writable: bool,
}

/// A mapped, validated Go ELF binary.
pub struct GoBinary {
    path: PathBuf,
    map: Mmap,
    arch: Arch,
    machine: u16,
    mode: BuildMode,
    build_info: BuildInfo,
    segments: Vec<Segment>,
    functions: OnceLock<HashMap<String, Function>>,
    pclntab: OnceLock<Result<pclntab::Index, PclntabError>>,
}

/// Where [`GoBinary::function_source`] found a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolSource {
    /// The ELF symbol table: the exact size the compiler emitted.
    Symtab,
    /// Go's `.gopclntab`, for binaries built with `-ldflags=-s`: the size runs to the next
    /// function's entry, so it includes alignment padding.
    Pclntab,
}

impl SymbolSource {
    /// Lowercase name for reports: `symtab` or `pclntab`.
    pub fn as_str(self) -> &'static str {
        match self {
            SymbolSource::Symtab => "symtab",
            SymbolSource::Pclntab => "pclntab",
        }
    }
}

impl std::fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoBinary")
            .field("path", &self.path)
            .field("arch", &self.arch)
            .field("mode", &self.mode)
            .field("go_version", &self.build_info.go_version)
            .finish_non_exhaustive()
    }
}

/// Facts read from the ELF and program headers.
struct ElfFacts {
    machine: u16,
    pie: bool,
    static_linked: bool,
    segments: Vec<Segment>,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Largest decompressed debug section accepted (1 GiB).
const MAX_DEBUG_SECTION: u64 = 1 << 30;
/// Offsets into `e_ident`.
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;

impl GoBinary {
    /// Maps `path` and validates it as a Go ELF executable.
    pub fn open(path: &Path) -> Result<GoBinary, Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < ELF_MAGIC.len() as u64 {
            // Also avoids mapping an empty file, which mmap rejects.
            return Err(Error::NotElf {
                path: path.to_owned(),
            });
        }
        // SAFETY: the mapping is read-only and private to this value. Another process
        // truncating or rewriting the file while it is mapped could change or remove the
        // bytes underneath us (SIGBUS); that is the accepted risk of inspecting binaries
        // by mmap, the same one debuggers take. Executables of running processes cannot
        // be written (ETXTBSY), which covers the agent's use.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_map(path.to_owned(), map)
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<GoBinary, Error> {
        let data: &[u8] = &map;
        if data.get(..4) != Some(ELF_MAGIC.as_slice()) {
            return Err(Error::NotElf { path });
        }
        let facts = match data.get(EI_CLASS) {
            Some(&elf::ELFCLASS64) => {
                elf_facts::<elf::FileHeader64<object::Endianness>>(data, &path)?
            }
            Some(&elf::ELFCLASS32) => {
                elf_facts::<elf::FileHeader32<object::Endianness>>(data, &path)?
            }
            other => {
                return Err(Error::ElfClass {
                    path,
                    class: other.copied().unwrap_or(0),
                });
            }
        };
        let obj = object::File::parse(data).map_err(|source| Error::Malformed {
            path: path.clone(),
            source,
        })?;
        let stripped = obj.symbol_table().is_none();
        let has_dwarf = obj
            .section_by_name(".debug_info")
            .is_some_and(|s| s.size() > 0);
        let has_go_marker = [".gopclntab", ".note.go.buildid", ".go.buildinfo"]
            .iter()
            .any(|name| obj.section_by_name(name).is_some())
            || obj
                .symbols()
                .any(|s| s.name_bytes().is_ok_and(|n| n == b"runtime.main"));

        let segments = facts.segments;
        let read_at = |vaddr: u64, len: u64| read_vaddr(data, &segments, vaddr, len);
        let region = match obj.section_by_name(".go.buildinfo") {
            Some(section) => Some(section.data().map_err(|source| Error::Malformed {
                path: path.clone(),
                source,
            })?),
            // Binaries linked by an external linker may lose the section name; the
            // header then sits at an aligned spot of a writable segment.
            None => segments
                .iter()
                .filter(|s| s.writable)
                .filter_map(|s| read_vaddr(data, &segments, s.vaddr, s.filesz))
                .find(|bytes| buildinfo::find_header(bytes).is_some()),
        };
        let build_info = match region {
            Some(bytes) => buildinfo::parse(bytes, read_at).map_err(|source| Error::BuildInfo {
                path: path.clone(),
                source,
            })?,
            None if has_go_marker => BuildInfo {
                go_version: runtime_build_version(&obj, data, &segments).unwrap_or_default(),
                ..BuildInfo::default()
            },
            None => return Err(Error::NotGo { path }),
        };

        let arch = match facts.machine {
            elf::EM_X86_64 => Arch::X86_64,
            elf::EM_AARCH64 => Arch::Aarch64,
            other => Arch::Other(other),
        };
        Ok(GoBinary {
            path,
            arch,
            machine: facts.machine,
            mode: BuildMode {
                pie: facts.pie,
                static_linked: facts.static_linked,
                stripped,
                has_dwarf,
            },
            build_info,
            segments,
            functions: OnceLock::new(),
            pclntab: OnceLock::new(),
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn build_info(&self) -> &BuildInfo {
        &self.build_info
    }

    pub fn build_mode(&self) -> BuildMode {
        self.mode
    }

    /// The whole file.
    pub fn data(&self) -> &[u8] {
        &self.map
    }

    /// Fails with [`Error::GoTooOld`] unless the binary uses Go's register ABI:
    /// go1.17+ on amd64, go1.18+ on arm64 and other architectures. An unreadable
    /// version counts as too old (we never guess a calling convention).
    pub fn require_register_abi(&self) -> Result<(), Error> {
        let min_minor = if self.arch == Arch::X86_64 { 17 } else { 18 };
        match self.build_info.version_number() {
            Some((major, minor, _)) if major > 1 || (major == 1 && minor >= min_minor) => Ok(()),
            _ => Err(Error::GoTooOld {
                path: self.path.clone(),
                version: if self.build_info.go_version.is_empty() {
                    "unknown go version".to_owned()
                } else {
                    self.build_info.go_version.clone()
                },
            }),
        }
    }

    /// A function by its exact Go name, e.g. `net/http.serverHandler.ServeHTTP`: from
    /// `.symtab`, else from `.gopclntab` (stripped binaries). `None` when absent from both
    /// or the pclntab is unreadable ([`GoBinary::pclntab_function`] says why).
    pub fn function(&self, name: &str) -> Option<Function> {
        self.function_source(name).map(|(f, _)| f)
    }

    /// [`GoBinary::function`] and which table it came from.
    pub fn function_source(&self, name: &str) -> Option<(Function, SymbolSource)> {
        if let Some(f) = self
            .functions
            .get_or_init(|| self.index_functions())
            .get(name)
        {
            return Some((f.clone(), SymbolSource::Symtab));
        }
        let f = self.pclntab_function(name).ok().flatten()?;
        Some((f, SymbolSource::Pclntab))
    }

    /// A function from `.gopclntab` only (Go 1.18+ layout). The table is indexed once, on
    /// first use.
    pub fn pclntab_function(&self, name: &str) -> Result<Option<Function>, Error> {
        let index = self.pclntab_index()?;
        Ok(index.get(name).map(|(address, size)| Function {
            name: name.to_owned(),
            address,
            size,
        }))
    }

    /// Where the pclntab is and how its text start was found.
    pub fn pclntab_info(&self) -> Result<PclntabInfo, Error> {
        Ok(self.pclntab_index()?.info.clone())
    }

    fn pclntab_index(&self) -> Result<&pclntab::Index, Error> {
        self.pclntab
            .get_or_init(|| pclntab::index(self.data(), &self.segments))
            .as_ref()
            .map_err(|reason| Error::Pclntab {
                path: self.path.clone(),
                reason: reason.clone(),
            })
    }

    fn index_functions(&self) -> HashMap<String, Function> {
        let mut map = HashMap::new();
        let Ok(obj) = object::File::parse(self.data()) else {
            return map;
        };
        for sym in obj.symbols() {
            if sym.kind() != SymbolKind::Text || !sym.is_definition() {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            let f = Function {
                name: name.to_owned(),
                address: sym.address(),
                size: sym.size(),
            };
            // Keep the first definition, unless a later one has a size and it has none.
            match map.entry(f.name.clone()) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(f);
                }
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if e.get().size == 0 && f.size > 0 {
                        e.insert(f);
                    }
                }
            }
        }
        map
    }

    /// The file offset of `vaddr`, through the `PT_LOAD` segment whose file-backed part
    /// contains it. This is the offset a uprobe attaches at.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        file_offset(&self.segments, vaddr)
    }

    /// The address of any defined symbol (function or data, e.g. a Go itab) by exact name.
    /// `None` when absent or the binary is stripped.
    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        let obj = object::File::parse(self.data()).ok()?;
        obj.symbols()
            .find(|s| s.is_definition() && s.name_bytes().is_ok_and(|n| n == name.as_bytes()))
            .map(|s| s.address())
    }

    /// `len` bytes at `vaddr`, when all of them are backed by one segment of the file.
    pub fn read_vaddr(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        read_vaddr(self.data(), &self.segments, vaddr, len)
    }

    /// Virtual addresses of every return instruction of `f`, by linear decoding of
    /// `[address, address + size)`. Put a plain uprobe on each instead of a uretprobe.
    pub fn ret_sites(&self, f: &Function) -> Result<Vec<u64>, Error> {
        let code = self
            .read_vaddr(f.address, f.size)
            .ok_or_else(|| Error::CodeNotInFile {
                path: self.path.clone(),
                symbol: f.name.clone(),
                address: f.address,
                size: f.size,
            })?;
        match self.arch {
            Arch::X86_64 => Ok(ret::x86_64(code, f.address)),
            Arch::Aarch64 => Ok(ret::aarch64(code, f.address, self.is_little_endian())),
            Arch::Other(_) => Err(Error::UnsupportedArch {
                path: self.path.clone(),
                symbol: f.name.clone(),
                machine: self.machine,
            }),
        }
    }

    fn is_little_endian(&self) -> bool {
        self.data().get(EI_DATA) != Some(&elf::ELFDATA2MSB)
    }

    /// The DWARF offset of member `field` in struct `type_name` (full Go name, e.g.
    /// `net/http.Request`). `Ok(None)` when the type or field is absent.
    pub fn struct_field_offset(&self, type_name: &str, field: &str) -> Result<Option<u64>, Error> {
        Ok(self
            .struct_field_offsets(&[(type_name, field)])?
            .into_iter()
            .next()
            .flatten())
    }

    /// Resolves many `(type, field)` pairs in one pass over `.debug_info`, in order.
    pub fn struct_field_offsets(&self, wanted: &[(&str, &str)]) -> Result<Vec<Option<u64>>, Error> {
        let obj = object::File::parse(self.data()).map_err(|source| Error::Malformed {
            path: self.path.clone(),
            source,
        })?;
        let Some(info) = self.debug_section(&obj, ".debug_info")? else {
            return Err(Error::NoDwarf {
                path: self.path.clone(),
            });
        };
        let abbrev = self
            .debug_section(&obj, ".debug_abbrev")?
            .unwrap_or_default();
        let strs = self.debug_section(&obj, ".debug_str")?.unwrap_or_default();
        let sections = dwarf::Sections {
            info: &info,
            abbrev: &abbrev,
            str: &strs,
            endian: if obj.is_little_endian() {
                gimli::RunTimeEndian::Little
            } else {
                gimli::RunTimeEndian::Big
            },
        };
        dwarf::field_offsets(&sections, wanted).map_err(|source| Error::Dwarf {
            path: self.path.clone(),
            source,
        })
    }

    /// Resolves `(type, field)` pairs, in order: from DWARF when the binary has it (one
    /// pass), else from the embedded [`OffsetsDb`] by the exact Go release and arch. A miss
    /// carries the reason; an unknown release is never guessed.
    pub fn resolve_fields(&self, wanted: &[(&str, &str)]) -> Vec<FieldResolution> {
        offsets::resolve_with(self, OffsetsDb::embedded(), wanted)
    }

    /// A debug section's bytes, decompressed (SHF_COMPRESSED or GNU `.zdebug_*`).
    fn debug_section<'d>(
        &self,
        obj: &object::File<'d>,
        name: &'static str,
    ) -> Result<Option<Cow<'d, [u8]>>, Error> {
        let Some(section) = obj.section_by_name(name) else {
            return Ok(None);
        };
        let decompress = |source| Error::Decompress {
            path: self.path.clone(),
            section: name,
            source,
        };
        let compressed = section.compressed_data().map_err(decompress)?;
        // A hostile header can claim any size; real Go DWARF sections are far below this.
        if compressed.uncompressed_size > MAX_DEBUG_SECTION {
            return Err(Error::SectionTooLarge {
                path: self.path.clone(),
                section: name,
                size: compressed.uncompressed_size,
            });
        }
        compressed.decompress().map(Some).map_err(decompress)
    }
}

fn elf_facts<Elf: FileHeader<Endian = object::Endianness>>(
    data: &[u8],
    path: &Path,
) -> Result<ElfFacts, Error> {
    let truncated = |source| Error::Truncated {
        path: path.to_owned(),
        source,
    };
    let header = Elf::parse(data).map_err(truncated)?;
    let endian = header.endian().map_err(|source| Error::Malformed {
        path: path.to_owned(),
        source,
    })?;
    let file = ElfFile::<Elf>::parse(data).map_err(|source| {
        if tables_exceed(header, endian, data.len() as u64) {
            truncated(source)
        } else {
            Error::Malformed {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let mut facts = ElfFacts {
        machine: header.e_machine(endian),
        pie: header.e_type(endian) == elf::ET_DYN,
        static_linked: true,
        segments: Vec::new(),
    };
    for ph in file.elf_program_headers() {
        match ph.p_type(endian) {
            elf::PT_LOAD => facts.segments.push(Segment {
                vaddr: ph.p_vaddr(endian).into(),
                offset: ph.p_offset(endian).into(),
                filesz: ph.p_filesz(endian).into(),
                writable: ph.p_flags(endian) & elf::PF_W != 0,
            }),
            elf::PT_INTERP => facts.static_linked = false,
            elf::PT_DYNAMIC => {
                if let Ok(Some(dyns)) = ph.dynamic(endian, data)
                    && dyns
                        .iter()
                        .any(|d| d.d_tag(endian).into() == u64::from(elf::DT_NEEDED))
                {
                    facts.static_linked = false;
                }
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// Whether the program or section header table reaches past the end of the file.
fn tables_exceed<Elf: FileHeader>(header: &Elf, endian: Elf::Endian, len: u64) -> bool {
    let end = |off: u64, num: u16, size: u16| {
        off.checked_add(u64::from(num).saturating_mul(u64::from(size)))
            .is_none_or(|end| end > len)
    };
    end(
        header.e_phoff(endian).into(),
        header.e_phnum(endian),
        header.e_phentsize(endian),
    ) || end(
        header.e_shoff(endian).into(),
        header.e_shnum(endian),
        header.e_shentsize(endian),
    )
}

fn file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    segments.iter().find_map(|s| {
        let delta = vaddr.checked_sub(s.vaddr)?;
        (delta < s.filesz)
            .then(|| s.offset.checked_add(delta))
            .flatten()
    })
}

fn read_vaddr<'a>(data: &'a [u8], segments: &[Segment], vaddr: u64, len: u64) -> Option<&'a [u8]> {
    let seg = segments.iter().find(|s| {
        vaddr
            .checked_sub(s.vaddr)
            .is_some_and(|d| d < s.filesz || (d == s.filesz && len == 0))
    })?;
    let delta = vaddr - seg.vaddr;
    if delta.checked_add(len)? > seg.filesz {
        return None;
    }
    let start = usize::try_from(seg.offset.checked_add(delta)?).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

/// `runtime.buildVersion`, a Go string in the data segment: the version source for
/// binaries that predate `.go.buildinfo` (before go1.13).
fn runtime_build_version(
    obj: &object::File<'_>,
    data: &[u8],
    segments: &[Segment],
) -> Option<String> {
    let sym = obj
        .symbols()
        .find(|s| s.name_bytes().is_ok_and(|n| n == b"runtime.buildVersion"))?;
    let word = if obj.is_64() { 8 } else { 4 };
    let little = obj.is_little_endian();
    let hdr = read_vaddr(data, segments, sym.address(), 2 * word)?;
    let read = |b: &[u8]| -> Option<u64> {
        let b = b.get(..word as usize)?;
        Some(match (word, little) {
            (8, true) => u64::from_le_bytes(b.try_into().ok()?),
            (8, false) => u64::from_be_bytes(b.try_into().ok()?),
            (_, true) => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
            (_, false) => u64::from(u32::from_be_bytes(b.try_into().ok()?)),
        })
    };
    let ptr = read(hdr)?;
    let len = read(hdr.get(word as usize..)?)?;
    if len > 256 {
        return None;
    }
    let bytes = read_vaddr(data, segments, ptr, len)?;
    String::from_utf8(bytes.to_vec()).ok()
}
