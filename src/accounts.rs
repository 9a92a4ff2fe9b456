//! `restic-manager user add` and `restic-manager token create`: scripting
//! the first setup (and `db-vacuum`, the other command that works on the
//! database file directly). They write the web role's own tables
//! directly (the web role is their only writer; these commands act as
//! it), so they work before anything runs. A password comes from a file or standard input,
//! never from the command line.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rm_web::auth::Role;

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The installation's data directory (holds the database by default).
    #[arg(long, default_value = "/var/lib/restic-manager")]
    pub data_dir: PathBuf,
    /// The SQLite database (default DATA_DIR/restic-manager.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

impl StoreArgs {
    /// The database file these arguments name.
    pub fn path(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.data_dir.join("restic-manager.db"))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Create an operator account.
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The account's name.
        #[arg(long)]
        name: String,
        /// admin, operator or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from this file (first line) instead of
        /// standard input.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Create an API token for an account and print it (shown only now).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// The account the token belongs to.
        #[arg(long)]
        user: String,
        /// A name for the token (where it is used).
        #[arg(long)]
        name: String,
        /// The token's role (at most the account's) [default: the account's].
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Days until it expires; 0 means never.
        #[arg(long, default_value_t = 90)]
        expires_days: u32,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role (admin, operator, viewer)"))
}

/// `restic-manager db-vacuum`: rewrites an existing database in key
/// order (`rm_store::vacuum`) and says what it did; a database in use by
/// a writer for more than 5 s is left as it was, with the reason.
pub async fn vacuum(args: &StoreArgs) -> Result<()> {
    let path = args.path();
    if !path.exists() {
        bail!("no database at {} (nothing done)", path.display());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let v = rm_store::vacuum::vacuum(&path, std::time::Duration::from_secs(5))
        .await
        .with_context(|| {
            format!(
                "{} was not rewritten (is a restic-manager service still writing to it? stop them first)",
                path.display()
            )
        })?;
    println!(
        "{}: {:.1} MiB ({:.1} MiB of it free pages) rewritten in key order to {:.1} MiB in {:.1} s",
        path.display(),
        mib(v.bytes_before),
        mib(v.free_bytes_before),
        mib(v.bytes_after),
        v.took.as_secs_f64()
    );
    Ok(())
}

async fn open(args: &StoreArgs) -> Result<rm_store::Store> {
    let path = args.path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    rm_store::Store::open(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))
}

fn read_password(file: Option<&Path>) -> Result<String> {
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line
        }
    };
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        bail!("no password given (first line of --password-file or standard input)");
    }
    Ok(password)
}

pub async fn user(cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add {
            store,
            name,
            role,
            password_file,
        } => {
            let password = read_password(password_file.as_deref())?;
            let db = open(&store).await?;
            let now = rm_bus::clock::system().now_ms();
            let id = rm_web::auth::accounts::add(&db, now, &name, role, &password, false).await?;
            println!("account {name} ({role}) created: {id}");
            db.close().await;
        }
    }
    Ok(())
}

pub async fn token(cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            store,
            user,
            name,
            role,
            expires_days,
        } => {
            let db = open(&store).await?;
            let found = {
                let mut conn = db.read().await?;
                rm_store::users::by_name(&mut conn, &user).await?
            };
            let Some((account, _)) = found else {
                bail!("no account named {user:?}");
            };
            let account_role = Role::parse(&account.role)
                .with_context(|| format!("account {user:?} has an unknown role"))?;
            let role = role.unwrap_or(account_role);
            if role > account_role {
                bail!("a token of {user:?} may have at most the {account_role} role");
            }
            let now = rm_bus::clock::system().now_ms();
            let expires = (expires_days > 0).then(|| now + i64::from(expires_days) * 86_400_000);
            let created =
                rm_web::auth::token::create_in(&db, &account.id, &name, role, now, expires).await?;
            println!("{}", created.secret);
            eprintln!(
                "token {} ({role}) for {user}; it is shown only now",
                created.id
            );
            db.close().await;
        }
    }
    Ok(())
}
