//! One module per subcommand.

pub mod agent;
pub mod check;
pub mod forget_fork;
pub mod hosts;
pub mod monitor;
pub mod placement;
pub mod projects;
pub mod restore;
pub mod retention;
pub mod save;
pub mod scrub;
pub mod serve;
pub mod streams;
pub mod trim;
