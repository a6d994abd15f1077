//! Static checks of the built `librulloc.so` with binutils (`nm`,
//! `objdump`): what it exports, and that the machine code of this crate's
//! functions (the C API, including everything inlined into it) cannot panic
//! or allocate through Rust's global allocator.
#![cfg(target_os = "linux")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The C API, and the only symbols the library may export.
const EXPORTS: [&str; 13] = [
    "aligned_alloc",
    "calloc",
    "cfree",
    "free",
    "malloc",
    "malloc_trim",
    "malloc_usable_size",
    "memalign",
    "posix_memalign",
    "pvalloc",
    "realloc",
    "reallocarray",
    "valloc",
];

fn tool_output(tool: &Path, args: &[&str], lib: &Path) -> String {
    let mut cmd = Command::new(tool);
    cmd.args(args).arg(lib);
    let out = run(cmd, TIMEOUT);
    out.assert_success();
    out.stdout_str()
}

/// The shared library exports exactly the C API: nothing of Rust's std,
/// nothing of the core.
#[test]
fn exports_exactly_the_c_api() {
    let Some(nm) = program_or_skip("nm", "exports_exactly_the_c_api") else {
        return;
    };
    let listing = tool_output(&nm, &["-D", "--defined-only"], shared_lib());
    let exported: BTreeSet<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|symbol| symbol.split('@').next().unwrap_or(symbol))
        .collect();
    let expected: BTreeSet<&str> = EXPORTS.into_iter().collect();
    assert_eq!(exported, expected, "exported symbols differ:\n{listing}");
}

/// Whether a (mangled) function name belongs to this crate: the exports
/// themselves and the `exports`, `reentry`, `init` and `sys` modules (the
/// core crate is also called `rulloc` but has no modules of these names).
fn is_capi_function(name: &str) -> bool {
    EXPORTS.contains(&name)
        || [
            "6rulloc7exports",
            "6rulloc7reentry",
            "6rulloc4init",
            "6rulloc3sys",
        ]
        .iter()
        .any(|module| name.contains(module))
}

/// Callees that must never appear in this crate's machine code.
fn forbidden(callee: &str) -> bool {
    // The abort-on-unwind shims rustc puts in every `extern "C" fn`: only
    // reachable if a callee unwinds (and then they abort, as they should).
    const SHIMS: [&str; 2] = ["panic_cannot_unwind", "panic_in_cleanup"];
    const BAD: [&str; 10] = [
        "panic",
        "unwrap_failed",
        "expect_failed",
        "slice_",
        "alloc_error",
        "capacity_overflow",
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "3std3env",
    ];
    BAD.iter().any(|bad| callee.contains(bad)) && !SHIMS.iter().any(|shim| callee.contains(shim))
}

/// Parses a hexadecimal address.
fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text, 16).ok()
}

/// Nothing in this crate's functions (with whatever got inlined into them)
/// calls a panic function, Rust's allocator or `std::env`: the "no panic
/// across the C boundary, no allocation in the allocator" rules, checked on
/// the release machine code rather than trusted.
///
/// Calls into the core (`rulloc::heap::...` etc.) are not followed: the
/// core's own functions are the core's business.
#[test]
fn capi_code_cannot_panic_or_allocate() {
    let (Some(nm), Some(objdump)) = (
        program_or_skip("nm", "capi_code_cannot_panic_or_allocate"),
        program_or_skip("objdump", "capi_code_cannot_panic_or_allocate"),
    ) else {
        return;
    };
    let lib = shared_lib();
    // Address -> symbol (the full symbol table: needs an unstripped
    // library, which the release profile's `debug = 1` gives).
    let mut symbols = BTreeMap::new();
    for line in tool_output(&nm, &["--defined-only"], lib).lines() {
        let mut fields = line.split_whitespace();
        if let (Some(addr), Some(_kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        {
            if let Some(addr) = hex(addr) {
                symbols.entry(addr).or_insert_with(|| name.to_owned());
            }
        }
    }
    if symbols.len() < 100 {
        loud("SKIPPED: librulloc.so has no symbol table (stripped?): capi_code_cannot_panic_or_allocate did not run");
        return;
    }
    // GOT slot -> callee: rustc calls functions of other crates through the
    // GOT, so the callee is found through the slot's relocation.
    let mut slots = BTreeMap::new();
    for line in tool_output(&objdump, &["-R"], lib).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [slot, _kind, value] = fields[..] {
            let Some(slot) = hex(slot) else { continue };
            let callee = match value.strip_prefix("*ABS*+0x").and_then(hex) {
                Some(addr) => symbols
                    .get(&addr)
                    .cloned()
                    .unwrap_or_else(|| value.to_owned()),
                None => value.to_owned(),
            };
            slots.insert(slot, callee);
        }
    }
    let disassembly = tool_output(&objdump, &["-d", "--no-show-raw-insn"], lib);
    let mut current: Option<&str> = None;
    let mut checked = BTreeSet::new();
    let mut violations = Vec::new();
    for line in disassembly.lines() {
        // "0000000000012b50 <malloc>:"
        if let Some(name) = line
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, name)| name)
        {
            current = Some(name).filter(|name| is_capi_function(name));
            if let Some(name) = current {
                checked.insert(name.to_owned());
            }
            continue;
        }
        let Some(function) = current else { continue };
        let Some((_, instruction)) = line.split_once(":\t") else {
            continue;
        };
        let mut parts = instruction.split_whitespace();
        let (Some(op), Some(operand)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !op.starts_with("call") && !op.starts_with("jmp") {
            continue;
        }
        let callee = if operand.starts_with("*0x") && operand.ends_with("(%rip)") {
            // "call *0x3f40e(%rip)        # 52b70 <...>"
            instruction
                .split_once("# ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(hex)
                .and_then(|slot| slots.get(&slot).cloned())
        } else {
            hex(operand).and_then(|addr| symbols.get(&addr).cloned())
        };
        if let Some(callee) = callee.filter(|callee| forbidden(callee)) {
            violations.push(format!("{function} calls {callee}"));
        }
    }
    for export in EXPORTS {
        assert!(
            checked.contains(export),
            "{export} not found in the disassembly"
        );
    }
    assert!(
        violations.is_empty(),
        "forbidden calls in librulloc's C API code (code the core inlines into the exports \
         counts: a panic there aborts the C program, an allocation re-enters the allocator):\n{}",
        violations.join("\n")
    );
    println!("checked {} functions: {checked:?}", checked.len());
}
