//! The pod sandbox ("pause") program and its image.
//!
//! The sandbox container only has to hold the pod's namespaces open, reap
//! zombies when it is the pod's PID 1, and exit cleanly when the runtime stops
//! it. That is a dozen x86_64 instructions, so we emit a tiny static ELF from
//! Rust instead of shipping a binary or needing a toolchain at run time.
//!
//! What the program does:
//! 1. `rt_sigaction(SIGCHLD, {SIG_IGN})`: with SIGCHLD ignored the kernel
//!    reaps exited children itself, so no zombies pile up.
//! 2. `rt_sigaction(SIGTERM | SIGINT, {handler})`, where the handler is
//!    `exit_group(0)`: a PID 1 in a PID namespace ignores signals it has no
//!    handler for, so without these the runtime would always need SIGKILL.
//! 3. Loop on `pause()`.
//!
//! If a `rt_sigaction` call fails the program exits with status 1 so a broken
//! sandbox shows up at once rather than hanging unkillable.

use crate::image::{ImageBuilder, ImageError};

/// Image reference of the sandbox image, as `sandbox_image` in the generated
/// containerd config and as the name the archive imports under.
pub const PAUSE_IMAGE: &str = "kelson.dev/pause:1";

/// Where the ELF is mapped: the classic non-PIE base address.
const BASE: u64 = 0x40_0000;
const ELF_HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const PROGRAM_HEADERS: usize = 2;
const CODE_OFFSET: usize = ELF_HEADER_SIZE + PROGRAM_HEADERS * PROGRAM_HEADER_SIZE;

// Linux x86_64 syscall numbers.
const SYS_RT_SIGACTION: u32 = 13;
const SYS_PAUSE: u32 = 34;
const SYS_EXIT_GROUP: u32 = 231;
// Signals.
const SIGINT: u32 = 2;
const SIGTERM: u32 = 15;
const SIGCHLD: u32 = 17;
/// `SIG_IGN` as a handler value.
const SIG_IGN: u64 = 1;
/// x86_64 signal delivery fails (and the process gets SIGSEGV) unless the
/// action carries SA_RESTORER with a return trampoline. Our handler never
/// returns, so the trampoline is the handler itself.
const SA_RESTORER: u64 = 0x0400_0000;
/// `sizeof(sigset_t)` as the kernel expects it in `rt_sigaction`.
const SIGSET_SIZE: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("building the pause image: {0}")]
    Image(#[from] ImageError),
}

/// Jump targets inside the generated code.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Loop,
    Fail,
    Handler,
    Exit,
}

/// A minimal assembler: raw instruction bytes plus `rel8` jumps resolved
/// once every label is placed.
#[derive(Default)]
struct Asm {
    code: Vec<u8>,
    labels: Vec<(Label, usize)>,
    /// (position of the rel8 byte, target)
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }

    fn label(&mut self, l: Label) {
        self.labels.push((l, self.code.len()));
    }

    /// `mov r32, imm32`: opcode `b8+r`, 4-byte little-endian immediate (the
    /// upper half of the 64-bit register is zeroed).
    fn mov_imm32(&mut self, opcode: u8, imm: u32) {
        self.code.push(opcode);
        self.code.extend_from_slice(&imm.to_le_bytes());
    }

    /// A short jump (`eb` jmp, `75` jnz) to a label.
    fn jump(&mut self, opcode: u8, target: Label) {
        self.code.push(opcode);
        self.jumps.push((self.code.len(), target));
        self.code.push(0);
    }

    fn position(&self, target: Label) -> Option<usize> {
        self.labels
            .iter()
            .find(|(l, _)| *l == target)
            .map(|&(_, pos)| pos)
    }

    /// Patches the jumps. Every label used is placed by [`code`], so a
    /// missing one would only leave a zero displacement.
    fn finish(mut self) -> Vec<u8> {
        for &(at, target) in &self.jumps {
            let dest = self.position(target).unwrap_or(at + 1);
            // rel8 counts from the end of the jump instruction.
            let rel = dest as i64 - (at as i64 + 1);
            self.code[at] = (rel as i8) as u8;
        }
        self.code
    }
}

// Register opcodes for `mov r32, imm32`.
const MOV_EAX: u8 = 0xb8;
const MOV_EDI: u8 = 0xbf;
const MOV_ESI: u8 = 0xbe;

/// Emits the program for the given absolute addresses of the two sigaction
/// structs; returns the code and the offset of the signal handler in it.
/// Every immediate has a fixed width, so the layout does not depend on the
/// addresses.
fn code(ign_action: u32, exit_action: u32) -> (Vec<u8>, usize) {
    let mut a = Asm::default();
    for (signal, action) in [
        (SIGCHLD, ign_action),
        (SIGTERM, exit_action),
        (SIGINT, exit_action),
    ] {
        a.mov_imm32(MOV_EAX, SYS_RT_SIGACTION); // b8 0d 00 00 00   mov eax, 13
        a.mov_imm32(MOV_EDI, signal); //           bf xx 00 00 00   mov edi, signal
        a.mov_imm32(MOV_ESI, action); //           be xx xx xx xx   mov esi, &action
        a.bytes(&[0x31, 0xd2]); //                 31 d2            xor edx, edx (no old action)
        a.bytes(&[0x41, 0xba]); //                 41 ba 08 00 00 00 mov r10d, 8
        a.bytes(&SIGSET_SIZE.to_le_bytes());
        a.bytes(&[0x0f, 0x05]); //                 0f 05            syscall
        a.bytes(&[0x85, 0xc0]); //                 85 c0            test eax, eax
        a.jump(0x75, Label::Fail); //              75 rel8          jnz fail
    }
    a.label(Label::Loop);
    a.mov_imm32(MOV_EAX, SYS_PAUSE); //            b8 22 00 00 00   mov eax, 34
    a.bytes(&[0x0f, 0x05]); //                     0f 05            syscall
    a.jump(0xeb, Label::Loop); //                  eb f7            jmp loop
    a.label(Label::Fail);
    a.mov_imm32(MOV_EDI, 1); //                    bf 01 00 00 00   mov edi, 1
    a.jump(0xeb, Label::Exit); //                  eb 02            jmp exit
    a.label(Label::Handler);
    a.bytes(&[0x31, 0xff]); //                     31 ff            xor edi, edi
    a.label(Label::Exit);
    a.mov_imm32(MOV_EAX, SYS_EXIT_GROUP); //       b8 e7 00 00 00   mov eax, 231
    a.bytes(&[0x0f, 0x05]); //                     0f 05            syscall
    let handler = a.position(Label::Handler).unwrap_or(0);
    (a.finish(), handler)
}

/// The kernel's `struct sigaction` on x86_64: handler, flags, restorer, mask.
fn sigaction(handler: u64, flags: u64, restorer: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[0..8].copy_from_slice(&handler.to_le_bytes());
    s[8..16].copy_from_slice(&flags.to_le_bytes());
    s[16..24].copy_from_slice(&restorer.to_le_bytes());
    // sa_mask stays empty.
    s
}

/// The pause program: a static x86_64 Linux ELF executable.
pub fn elf() -> Vec<u8> {
    let (probe, handler) = code(0, 0);
    // Data follows the code, 8-byte aligned.
    let data_offset = (CODE_OFFSET + probe.len()).div_ceil(8) * 8;
    let ign_addr = BASE + data_offset as u64;
    let exit_addr = ign_addr + 32;
    let handler_addr = BASE + (CODE_OFFSET + handler) as u64;
    let total = data_offset + 64;

    // Every address is below 4 GiB (BASE plus a few hundred bytes), so the
    // 32-bit immediates hold them.
    let (code, _) = code(ign_addr as u32, exit_addr as u32);

    let mut out = Vec::with_capacity(total);
    // --- ELF header (64 bytes) ---
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F']); // magic
    out.push(2); // EI_CLASS: 64-bit
    out.push(1); // EI_DATA: little endian
    out.push(1); // EI_VERSION: current
    out.push(0); // EI_OSABI: System V
    out.extend_from_slice(&[0; 8]); // EI_ABIVERSION + padding
    out.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    out.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86_64
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&(BASE + CODE_OFFSET as u64).to_le_bytes()); // e_entry
    out.extend_from_slice(&(ELF_HEADER_SIZE as u64).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(ELF_HEADER_SIZE as u16).to_le_bytes()); // e_ehsize
    out.extend_from_slice(&(PROGRAM_HEADER_SIZE as u16).to_le_bytes()); // e_phentsize
    out.extend_from_slice(&(PROGRAM_HEADERS as u16).to_le_bytes()); // e_phnum
    out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                                // --- PT_LOAD: the whole file, read + execute, mapped at BASE ---
    out.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    out.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R | X
    out.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    out.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    out.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    out.extend_from_slice(&(total as u64).to_le_bytes()); // p_filesz
    out.extend_from_slice(&(total as u64).to_le_bytes()); // p_memsz
    out.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
                                                     // --- PT_GNU_STACK: non-executable stack ---
    out.extend_from_slice(&0x6474_e551u32.to_le_bytes()); // p_type
    out.extend_from_slice(&6u32.to_le_bytes()); // p_flags: R | W
    out.extend_from_slice(&[0; 48]); // offset, addresses, sizes, align
                                     // --- code ---
    out.extend_from_slice(&code);
    out.resize(data_offset, 0);
    // --- data: the two sigaction structs ---
    out.extend_from_slice(&sigaction(SIG_IGN, 0, 0));
    out.extend_from_slice(&sigaction(handler_addr, SA_RESTORER, handler_addr));
    out
}

/// The pause image as an OCI archive for `ctr images import`; it imports as
/// [`PAUSE_IMAGE`].
pub fn image_tarball() -> Result<Vec<u8>, PauseError> {
    Ok(ImageBuilder::new(PAUSE_IMAGE)
        .file("pause", elf(), 0o755)
        .entrypoint(["/pause"])
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    }

    #[test]
    fn elf_header_is_a_static_x86_64_executable() {
        let elf = elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "64-bit");
        assert_eq!(elf[5], 1, "little endian");
        assert_eq!(u16_at(&elf, 16), 2, "ET_EXEC");
        assert_eq!(u16_at(&elf, 18), 0x3e, "x86_64");
        let entry = u64_at(&elf, 24);
        assert_eq!(entry, BASE + CODE_OFFSET as u64);
        // The entry point is inside the loaded segment, and the segment
        // covers the whole file.
        assert_eq!(u64_at(&elf, 64 + 32), elf.len() as u64, "p_filesz");
        assert!(entry < BASE + elf.len() as u64);
        // The handler address stored in the exit action points at
        // `xor edi, edi; mov eax, 231; syscall`.
        let handler = u64_at(&elf, elf.len() - 32) - BASE;
        let h = handler as usize;
        assert_eq!(
            &elf[h..h + 9],
            &[0x31, 0xff, 0xb8, 0xe7, 0, 0, 0, 0x0f, 0x05]
        );
        // The restorer is set, as x86_64 requires.
        assert_eq!(u64_at(&elf, elf.len() - 24), SA_RESTORER);
        // The SIGCHLD action is SIG_IGN.
        assert_eq!(u64_at(&elf, elf.len() - 64), SIG_IGN);
        assert!(elf.len() < 512, "tiny: {} bytes", elf.len());
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let (c, _) = code(0, 0);
        // The pause loop: `mov eax, 34; syscall; jmp -9`.
        let lp = c
            .windows(9)
            .position(|w| w == [0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7])
            .expect("pause loop present");
        // Each `jnz fail` lands on `mov edi, 1`.
        let fail = lp + 9;
        assert_eq!(&c[fail..fail + 5], &[0xbf, 1, 0, 0, 0]);
        let jnz: Vec<usize> = (0..c.len() - 1)
            .filter(|&i| c[i] == 0x75 && i >= 2 && c[i - 2] == 0x85)
            .collect();
        assert_eq!(jnz.len(), 3);
        for i in jnz {
            assert_eq!(i + 2 + (c[i + 1] as i8) as usize, fail);
        }
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn runs_ignores_sigchld_and_exits_zero_on_sigterm() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        use std::time::{Duration, Instant};

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pause");
        {
            let mut f = std::fs::File::create(&path).expect("create");
            f.write_all(&elf()).expect("write");
            f.sync_all().expect("sync");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // Another test thread forking while our write fd was open can make
        // exec fail with ETXTBSY for a moment.
        let mut child = None;
        for _ in 0..50 {
            match std::process::Command::new(&path).spawn() {
                Ok(c) => {
                    child = Some(c);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("spawn pause: {e}"),
            }
        }
        let mut child = child.expect("spawned");
        let pid = child.id();
        // Wait until the three actions are installed.
        let status_path = format!("/proc/{pid}/status");
        let deadline = Instant::now() + Duration::from_secs(5);
        let (ign, cgt) = loop {
            let status = std::fs::read_to_string(&status_path).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                    .unwrap_or(0)
            };
            let (ign, cgt) = (field("SigIgn:"), field("SigCgt:"));
            if cgt == (1 << (SIGINT - 1)) | (1 << (SIGTERM - 1)) || Instant::now() > deadline {
                break (ign, cgt);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(
            ign & (1 << (SIGCHLD - 1)),
            1 << (SIGCHLD - 1),
            "SIGCHLD ignored"
        );
        assert_eq!(cgt, (1 << (SIGINT - 1)) | (1 << (SIGTERM - 1)), "handlers");
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "still running"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "{status:?}");
    }

    #[test]
    fn image_tarball_names_the_pause_image() {
        let tar = image_tarball().expect("image");
        let index = crate::image::tests::archive_file(&tar, "index.json").expect("index.json");
        let index: serde_json::Value = serde_json::from_slice(&index).expect("json");
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            PAUSE_IMAGE
        );
    }
}
