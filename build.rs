//! Embeds every file under `templates/` so the binary carries its default templates, and, for
//! release builds on x86-64 Linux (linked by LLD, rustc's default there), makes a linker script
//! of `benches/startup.order`: the functions the daemon runs while starting and idling, placed
//! side by side so that fewer pages of code stay resident at rest (`benches/startup-order.sh`
//! regenerates it; names no longer in the binary match nothing).

use std::fmt::Write;
use std::path::Path;

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, root, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    println!("cargo:rerun-if-changed=templates");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let mut code = String::from("pub static BUILTIN: &[(&str, &str)] = &[\n");
    for file in &files {
        let _ = writeln!(
            code,
            "    ({file:?}, include_str!({:?})),",
            root.join(file).to_string_lossy()
        );
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("templates.rs");
    std::fs::write(out, code).expect("write templates.rs");
    startup_order();
}

/// The start-up functions go first in `.text`, by a linker script of `INSERT` form (LLD keeps
/// its default layout for the rest; one `.text`, so tools that read it as the code, valgrind
/// among them, still see all of it). A pattern per function, not `--symbol-ordering-file`:
/// ThinLTO names the local functions it promotes `<name>.llvm.<hash of their module>`, and that
/// hash moves with any change to the module, so those names are matched up to the suffix
/// (`<name>.llvm.*`).
/// `SWITCHBOARD_STARTUP_ORDER=0` leaves both options out (for a linker other than LLD).
fn startup_order() {
    println!("cargo:rerun-if-changed=benches/startup.order");
    println!("cargo:rerun-if-env-changed=SWITCHBOARD_STARTUP_ORDER");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = env("PROFILE") == "release"
        && env("CARGO_CFG_TARGET_OS") == "linux"
        && env("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && env("SWITCHBOARD_STARTUP_ORDER") != "0";
    if !wanted {
        return;
    }
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/startup.order");
    if let Ok(names) = std::fs::read_to_string(&order) {
        let mut script = String::from("SECTIONS {\n  .text : {\n");
        for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
            // Only symbol characters: anything else could end the pattern early.
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c))
            {
                continue;
            }
            let name = name
                .find(".llvm.")
                .map_or(name.to_string(), |at| format!("{}.llvm.*", &name[..at]));
            // LLVM puts cold functions (`#[cold]`, the slow paths) in `.text.unlikely.*`.
            let _ = writeln!(script, "    *(.text.{name} .text.unlikely.{name})");
        }
        // Then everything else, as LLD's default layout has it.
        script.push_str("    *(.text .text.*)\n  }\n} INSERT BEFORE .init;\n");
        let path = Path::new(&env("OUT_DIR")).join("startup.ld");
        std::fs::write(&path, script).expect("write startup.ld");
        println!(
            "cargo:rustc-link-arg-bin=switchboard=-Wl,-T,{}",
            path.display()
        );
    }
    // Relative relocations packed (DT_RELR, glibc 2.36 and later): the dynamic loader reads
    // every relocation at start, and as RELA entries they were 2 MB of the binary.
    println!("cargo:rustc-link-arg-bin=switchboard=-Wl,-z,pack-relative-relocs");
}
