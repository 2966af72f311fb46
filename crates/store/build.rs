//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds the directories, and
//! stable Rust does not track them.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
