// Migrations are embedded with `embed_migrations!`; a new migration folder must trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
