//! One module per subcommand.

pub mod projects;
pub mod restore;
pub mod save;
pub mod streams;
