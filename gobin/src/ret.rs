//! Return instructions inside a function body.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// Linear decode of x86-64 code at `ip`; the address of every near `RET` / `RET imm16`.
/// Go places no data inside function bodies on amd64, so linear decoding is exact.
pub fn x86_64(code: &[u8], ip: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.mnemonic() == Mnemonic::Ret {
            out.push(instr.ip());
        }
    }
    out
}

/// `RET {Xn}`: `1101011 0010 11111 000000 nnnnn 00000`.
const RET_MASK: u32 = 0xffff_fc1f;
const RET_BITS: u32 = 0xd65f_0000;
/// `RETAA` / `RETAB` (pointer authentication; Go does not emit them, others might).
const RETAA: u32 = 0xd65f_0bff;
const RETAB: u32 = 0xd65f_0fff;

/// aarch64: fixed 4-byte words from `ip`; the address of every `RET`.
pub fn aarch64(code: &[u8], ip: u64, little_endian: bool) -> Vec<u64> {
    let (words, _) = code.as_chunks::<4>();
    words
        .iter()
        .zip((ip..).step_by(4))
        .filter_map(|(&bytes, addr)| {
            let w = if little_endian {
                u32::from_le_bytes(bytes)
            } else {
                u32::from_be_bytes(bytes)
            };
            (w & RET_MASK == RET_BITS || w == RETAA || w == RETAB).then_some(addr)
        })
        .collect()
}
