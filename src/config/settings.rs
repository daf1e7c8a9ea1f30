//! Every setting, declared once. A [`Setting`] holds everything the rest of the program knows about
//! it: its environment variable (the seed's name), from which the flag (`--cache-max-size`) and the
//! config-file key (`cache_max_size`) are derived; how its value is written ([`Kind`], which also
//! decides the TOML types the file may use); its default, as text parsed by the same parser as any
//! given value; its help; whether it is a secret (also readable from `NAME_FILE`, never echoed).
//!
//! The command line (`crate::cli`), the environment lookup and its typo guard, the config file's
//! key check, the secret-file mechanism, error naming and the README's configuration table
//! ([`markdown`]) are all built from [`ALL`]; nothing else lists settings.

/// How a setting's value is written; decides which TOML types the file may use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); a bare flag means `true`.
    Bool,
    /// Bytes, or a number with a `k`/`m`/`g`/`t` suffix; an integer or a string in the file.
    Size,
    /// Seconds, or `1h30m`-style; an integer or a string in the file.
    Duration,
    /// Space-separated in flags and environment; a string or an array of strings in the file.
    List,
    /// A whole number; an integer or a string in the file.
    Count,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable. The flag is the lower-case name with `-` for `_`, the file key the
    /// lower-case name.
    pub name: &'static str,
    pub kind: Kind,
    /// Placeholder for the value in `--help` (`ADDR`, `FILE`, …).
    pub value_name: &'static str,
    /// The value when none is given, as text (parsed like a given value); `None`: unset.
    pub default: Option<&'static str>,
    /// One line for `--help`.
    pub help: &'static str,
    /// More, for `--help` (long form) and the README table; may be empty.
    pub details: &'static str,
    /// Never echoed in an error, redacted in debug output, and readable from the file that
    /// `NAME_FILE` names.
    pub secret: bool,
    /// May be given in the config file (`CONFIG` itself may not).
    pub in_file: bool,
    /// A variable of the seed that registry-proxy does not need: accepted and checked, hidden from
    /// `--help`, and each use is answered with a start-up warning that says this.
    pub seed_note: Option<&'static str>,
}

/// Appended to a secret setting's name for the variant that names a file holding it.
pub const FILE_SUFFIX: &str = "_FILE";

/// Environment variables with these prefixes must be known settings (typo protection); any other
/// variable is none of our business.
pub const GUARDED_PREFIXES: [&str; 11] = [
    "MANIFEST_CACHE_",
    "PROXY_CONNECT_",
    "AUTH_REGISTR",
    "AUTH_CACHE",
    "PROXY_HTPASS",
    "CACHE_",
    "TLS_",
    "TUNNEL_",
    "CA_KEY_PASS",
    "S3_",
    "PEER_",
];

const fn setting(kind: Kind, value_name: &'static str, help: &'static str) -> Setting {
    Setting {
        name: "",
        kind,
        value_name,
        default: None,
        help,
        details: "",
        secret: false,
        in_file: true,
        seed_note: None,
    }
}

const fn text(value_name: &'static str, help: &'static str) -> Setting {
    setting(Kind::Text, value_name, help)
}

const fn list(value_name: &'static str, help: &'static str) -> Setting {
    setting(Kind::List, value_name, help)
}

const fn boolean(default: &'static str, help: &'static str) -> Setting {
    setting(Kind::Bool, "BOOL", help).default(default)
}

const fn duration(default: &'static str, help: &'static str) -> Setting {
    setting(Kind::Duration, "DURATION", help).default(default)
}

const fn size(default: &'static str, help: &'static str) -> Setting {
    setting(Kind::Size, "SIZE", help).default(default)
}

/// One of the seed's nginx timeouts.
const fn timeout(help: &'static str) -> Setting {
    duration("60s", help)
}

/// One of the seed's switches that registry-proxy has no use for.
const fn seed_switch(note: &'static str) -> Setting {
    let mut s = setting(Kind::Bool, "BOOL", "The seed's; not needed");
    s.seed_note = Some(note);
    s
}

impl Setting {
    const fn named(mut self, name: &'static str) -> Setting {
        self.name = name;
        self
    }

    const fn default(mut self, value: &'static str) -> Setting {
        self.default = Some(value);
        self
    }

    const fn details(mut self, details: &'static str) -> Setting {
        self.details = details;
        self
    }

    const fn secret(mut self) -> Setting {
        self.secret = true;
        self
    }

    const fn not_in_file(mut self) -> Setting {
        self.in_file = false;
        self
    }

    /// `--cache-max-size` for `CACHE_MAX_SIZE`.
    pub fn flag(&self) -> String {
        flag_of(self.name)
    }

    /// `cache_max_size` for `CACHE_MAX_SIZE`.
    pub fn file_key(&self) -> String {
        self.name.to_ascii_lowercase()
    }

    /// `NAME_FILE`, for a secret.
    pub fn file_variant(&self) -> Option<String> {
        self.secret.then(|| format!("{}{FILE_SUFFIX}", self.name))
    }

    /// Shown in `--help`, the README and listed by `registry-proxy settings`.
    pub fn documented(&self) -> bool {
        self.seed_note.is_none()
    }
}

/// The flag for an environment variable name: `--` and the lower-case name with `-` for `_`.
pub fn flag_of(env_name: &str) -> String {
    format!("--{}", env_name.to_ascii_lowercase().replace('_', "-"))
}

macro_rules! settings {
    ($($(#[$attr:meta])* $id:ident = $setting:expr;)*) => {
        $($(#[$attr])* pub const $id: Setting = $setting.named(stringify!($id));)*
        /// Every setting, in the order of `--help` and the README table.
        pub const ALL: &[Setting] = &[$($id),*];
    };
}

settings! {
    CONFIG = text("FILE", "TOML config file; keys are the setting names in lower case")
        .not_in_file();
    LISTEN = text("ADDR", "The client-facing listener (address:port, or a bare port)")
        .default("0.0.0.0:3128");
    REGISTRIES = list("HOSTS", "Space-separated registries to intercept and cache besides Docker Hub")
        .default("registry.k8s.io gcr.io quay.io ghcr.io")
        .details(
            "`host` or `host:port`; `http://host:port` for a registry that only speaks plain HTTP \
             (never assumed: only when written so); `https://host` is the same as `host`",
        );
    AUTH_REGISTRIES = list("ENTRIES", "`host:user:password` entries for upstream auth")
        .secret()
        .details(
            "The host may be the registry or its token realm host (`auth.docker.io`). Credentials \
             go to a token realm only over `https`, and only when the realm is the registry's own \
             host and port or the host (port 443 unless the entry names one) an entry names; an \
             entry naming a realm host serves Docker Hub and `REGISTRIES`, not registries reached \
             through `MIRROR_ANY`. From a file (`AUTH_REGISTRIES_FILE`), line breaks separate \
             entries too",
        );
    AUTH_REGISTRIES_DELIMITER = text("SEP", "Separator between AUTH_REGISTRIES entries").default(" ");
    AUTH_REGISTRY_DELIMITER = text("SEP", "Separator inside one AUTH_REGISTRIES entry").default(":");
    CACHE_DIR = text("DIR", "Cache root").default("./data/cache");
    CA_DIR = text("DIR", "Directory holding ca.crt and ca.key, created on first start, reused after")
        .default("./data/ca")
        .details(
            "`ca.key` is kept at mode 0600. The seed's `/ca` volume loads as is: an encrypted \
             `ca.key` (PEM `DES-EDE3-CBC` or PKCS#8) is opened with `CA_KEY_PASSPHRASE`, or with \
             the seed's own passphrase when that is not set",
        );
    CA_KEY_PASSPHRASE = text("PASSPHRASE", "Passphrase of an encrypted ca.key (default: the seed's)")
        .secret();
    CACHE_MAX_SIZE = size("32g", "Cache size cap (least recently used goes first)");
    CACHE_INACTIVE = duration("60d", "Entries unused this long are evicted");
    CACHE_MIN_FREE = size("1g", "Free disk space to keep");
    ENABLE_MANIFEST_CACHE = boolean("false", "Serve tags inside their TTL tier without asking upstream")
        .details("Otherwise every tag is revalidated with a `HEAD`");
    MANIFEST_CACHE_PRIMARY_REGEX = text(
        "REGEX",
        "Tags matching this (from their start) use the primary TTL; empty disables the tier",
    )
    .default("(stable|nightly|production|test)");
    MANIFEST_CACHE_PRIMARY_TIME = duration("10m", "TTL of the primary tier");
    MANIFEST_CACHE_SECONDARY_REGEX = text(
        "REGEX",
        "Tags matching this (from their start) use the secondary TTL; empty disables the tier",
    )
    .default(r"(.*)(\d|\.)+(.*)(\d|\.)+(.*)(\d|\.)+");
    MANIFEST_CACHE_SECONDARY_TIME = duration("60d", "TTL of the secondary tier");
    MANIFEST_CACHE_DEFAULT_TIME = duration("1h", "TTL of tags matching no tier");
    VERIFY_SSL = boolean("true", "Verify upstream TLS certificates");
    ALLOW_PUSH = boolean("false", "Pass writes through to upstream (uncached); otherwise 405");
    MIRROR_ANY = boolean(
        "false",
        "Mirror mode may reach any registry, not only Docker Hub and REGISTRIES",
    );
    DISABLE_IPV6 = boolean("false", "Use IPv4 only for upstream connections");
    ZERO_COPY = boolean(
        "true",
        "Send cached blobs on plain-HTTP connections with sendfile(2), straight from the cache file",
    )
    .details(
        "Whole blobs and ranges of blobs held on the local disk; TLS, downloads in flight and \
         the object-store tier always go through user space. Set to `false` to compare or to \
         rule it out",
    );
    DEBUG = boolean("false", "Verbose logs");
    UPSTREAM_CA_FILE = text("FILE", "Extra PEM roots trusted for upstreams (private registries)");
    CONNECT_TO = list("LIST", "Space-separated HOST:PORT:ADDR:PORT overrides, like curl's --connect-to");
    LOG_FORMAT = text("FORMAT", "`text` or `json`").default("text");
    TLS_LISTEN = text("ADDR", "A second, TLS port for mirror mode, e.g. 0.0.0.0:5443");
    TLS_CERT_FILE = text(
        "FILE",
        "PEM certificate for TLS_LISTEN (with TLS_KEY_FILE; default: minted by the proxy CA)",
    );
    TLS_KEY_FILE = text("FILE", "PEM private key for TLS_LISTEN");
    TLS_NAMES = list("NAMES", "Names of the certificate minted for TLS_LISTEN")
        .default("localhost 127.0.0.1");
    PROXY_HTPASSWD = text(
        "FILE",
        "bcrypt htpasswd file (`htpasswd -B`); when set, clients must log in",
    )
    .details("Reloaded on SIGHUP and when it changes; `/ca.crt` and `/healthz` stay open");
    TLS_CLIENT_CA_FILE = text(
        "FILE",
        "PEM CA bundle for client certificates on TLS_LISTEN (user = subject CN)",
    );
    AUTH_CACHE_TTL = duration(
        "5m",
        "How long an upstream's \"yes\" to a client's own credential for a repository is remembered",
    )
    .details("For registries with `auth = \"verify\"`");
    TUNNEL_ALLOW = list(
        "ENTRIES",
        "`host-glob:port` / `CIDR:port` targets for blind tunnels, absolute-form requests and \
         upstreams that are not configured registries",
    )
    .default(crate::access::tunnel::DEFAULT_TUNNEL_ALLOW)
    .details(
        "`[v6]:port` for IPv6, the port may be `*`. Also guards `MIRROR_ANY` targets, redirects \
         and token realms. Loopback, link-local (incl. 169.254.169.254), unspecified and the \
         proxy's own addresses only by an explicit, non-wildcard entry; anything refused, unknown \
         or unreachable gets the same `403`",
    );
    MAX_CONNECTIONS = setting(
        Kind::Count,
        "N",
        "Cap on open client connections (both listeners, tunnels included); beyond it 503",
    )
    .default("1024")
    .details(
        "`GET /healthz` still answers. The peer port (`PEER_LISTEN`) has a cap of the same size \
         of its own",
    );
    STORAGE = text(
        "URL",
        "Where objects live: `disk`, or `s3://bucket/prefix` (an S3-compatible bucket shared by \
         replicas, the local disk in front)",
    )
    .default("disk")
    .details("See docs/scale-out.md");
    S3_ENDPOINT = text(
        "URL",
        "`http(s)://host[:port]` of an S3-compatible server (default: AWS, from S3_REGION)",
    )
    .details(
        "MinIO, Ceph RGW, Garage, …; dialled with `CONNECT_TO`, `UPSTREAM_CA_FILE` and \
         `VERIFY_SSL` like upstreams",
    );
    S3_REGION = text("REGION", "The bucket's region").default("us-east-1");
    S3_PATH_STYLE = setting(
        Kind::Bool,
        "BOOL",
        "Path-style bucket requests (`host/bucket/key`) rather than virtual-hosted ones",
    )
    .details("Default: `true` with `S3_ENDPOINT`, else `false`");
    AWS_ACCESS_KEY_ID = text("ID", "Access key of the bucket (with AWS_SECRET_ACCESS_KEY)")
        .secret()
        .details("Neither: the instance's own credentials");
    AWS_SECRET_ACCESS_KEY = text("KEY", "Secret key of the bucket").secret();
    S3_MAX_SIZE = setting(
        Kind::Size,
        "SIZE",
        "Size cap of the bucket (blobs and manifests; least recently used goes first)",
    )
    .details(
        "Same syntax as `CACHE_MAX_SIZE`; default: no cap. `CACHE_INACTIVE` applies to the \
         bucket too. Collected by one replica at a time, holding a lease object in the bucket",
    );
    S3_GC_LEADER = text(
        "NAME",
        "The replica (its REPLICA_NAME) that collects the bucket where the store ignores \
         conditional writes",
    )
    .details(
        "Only used when the start-up probe finds that the store ignores `If-None-Match` (Garage \
         2.x); then nobody else collects, and without it nobody does",
    );
    REPLICA_NAME = text("NAME", "This replica's name, matched against S3_GC_LEADER")
        .details("Default: the host name (`HOSTNAME`, else the kernel's), a StatefulSet pod's name");
    PEERS = list(
        "ADDRS",
        "Every replica's peer address (`host:port …`, this one's too), or one DNS name:port \
         whose A/AAAA records are the replicas",
    )
    .details("With `PEER_LISTEN` and `PEER_SECRET`: misses are forwarded to each blob's owner");
    PEER_LISTEN = text("ADDR", "This replica's internal peer port, e.g. 0.0.0.0:3129")
        .details("Keep it on a private network");
    PEER_SECRET = text("SECRET", "The secret replicas authenticate each other with").secret();
    SEND_TIMEOUT = timeout("The seed's nginx send_timeout");
    CLIENT_BODY_TIMEOUT = timeout("The seed's nginx client_body_timeout");
    CLIENT_HEADER_TIMEOUT = timeout("The seed's nginx client_header_timeout");
    KEEPALIVE_TIMEOUT = duration("300s", "The seed's nginx keepalive_timeout");
    PROXY_READ_TIMEOUT = timeout("Time allowed for an upstream to send headers or the next bytes");
    PROXY_CONNECT_TIMEOUT = timeout("Time allowed to connect to an upstream");
    PROXY_SEND_TIMEOUT = timeout("The seed's nginx proxy_send_timeout");
    PROXY_CONNECT_READ_TIMEOUT = timeout("The seed's proxy_connect_read_timeout (CONNECT tunnels)");
    PROXY_CONNECT_CONNECT_TIMEOUT =
        timeout("The seed's proxy_connect_connect_timeout (CONNECT tunnels)");
    PROXY_CONNECT_SEND_TIMEOUT = timeout("The seed's proxy_connect_send_timeout (CONNECT tunnels)");
    DEBUG_HUB = seed_switch(
        "it put mitmproxy in front of Docker Hub; set DEBUG=true for verbose logs of upstream requests",
    );
    DEBUG_NGINX = seed_switch("there is no nginx; set DEBUG=true for verbose logs");
    PROXY_REQUEST_BUFFERING = seed_switch(
        "request bodies (pushes) are always streamed to upstream without buffering",
    );
    ALLOW_OWN_AUTH = seed_switch(
        "a client's own credentials are used for every registry without AUTH_REGISTRIES \
         credentials (`auth = \"verify\"`; see [registry.\"host\"] auth in the config file)",
    );
    ALLOW_PUSH_WITH_OWN_AUTH = seed_switch(
        "set ALLOW_PUSH=true: writes pass through with the client's own credentials, and \
         [[access]] push rules decide who may push",
    );
}

/// The setting whose environment variable is `env_name`.
pub fn find(env_name: &str) -> Option<&'static Setting> {
    ALL.iter().find(|s| s.name == env_name)
}

/// A setting's name, or a secret's `NAME_FILE`.
pub fn is_known(env_name: &str) -> bool {
    find(env_name).is_some()
        || env_name
            .strip_suffix(FILE_SUFFIX)
            .and_then(find)
            .is_some_and(|s| s.secret)
}

/// True if the value of `env_name` (a setting or a secret's `NAME_FILE`) must never be shown.
pub fn is_secret(env_name: &str) -> bool {
    find(env_name).is_some_and(|s| s.secret)
}

/// How the README and `--help` show a default.
pub fn shown_default(setting: &Setting) -> Option<String> {
    setting.default.map(|d| match d {
        "" => "empty".to_owned(),
        " " => "space".to_owned(),
        d if d.contains(' ') => format!("\"{d}\""),
        d => d.to_owned(),
    })
}

/// The README's configuration tables, generated from [`ALL`]: every documented setting, then the
/// seed's variables that are accepted with a warning.
pub fn markdown() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for s in ALL.iter().filter(|s| s.documented()) {
        let default = match s.default {
            None => "none".to_owned(),
            Some("") => "empty".to_owned(),
            Some(" ") => "space".to_owned(),
            Some(d) => format!("`{}`", cell(d)),
        };
        let mut meaning = cell(s.help);
        if !s.details.is_empty() {
            meaning.push_str(". ");
            meaning.push_str(&cell(s.details));
        }
        if let Some(file) = s.file_variant() {
            meaning.push_str(&format!(". Secret: also read from the file `{file}` names"));
        }
        if !s.in_file {
            meaning.push_str(". Flag or environment only");
        }
        out.push_str(&format!("| `{}` | {default} | {meaning} |\n", s.name));
    }
    out.push_str("\nThe seed's variables that registry-proxy has no use for are accepted, with a warning at start-up:\n\n");
    out.push_str("| variable | instead |\n|---|---|\n");
    for s in ALL.iter() {
        if let Some(note) = s.seed_note {
            out.push_str(&format!("| `{}` | {} |\n", s.name, cell(note)));
        }
    }
    out
}

#[cfg(test)]
mod tests;
