//! Link flags for `librulloc.so`.
//!
//! `-z nodelete`: `dlclose` never unmaps the library. Once it has served
//! one allocation it has registered a pthread key destructor (run when each
//! thread that allocated exits) and `pthread_atfork` handlers, and every
//! block it handed out lives in its mappings; unloading it would leave
//! those pointing at unmapped code (a thread exiting after the `dlclose`
//! crashed; `tests/c/dlopen.c` checks it no longer does).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
