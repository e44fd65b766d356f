//! Real peers for delivery tests, all on loopback: Postfix's smtp-sink and aiosmtpd
//! (tests/peers/aiosmtpd_peer.py, STARTTLS with rcgen certificates, AUTH) as next hops,
//! dnsmasq as the nameserver. A missing tool fails the test (./run-tests installs them).

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;

/// Files in `dir` once `n` of them are complete (`done` says when a file is), oldest
/// first; waits up to `within`.
pub fn wait_files_within(
    dir: &Path,
    n: usize,
    within: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<(PathBuf, Vec<u8>)> {
    let deadline = Instant::now() + within;
    loop {
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
            .filter_map(|p| {
                let bytes = std::fs::read(&p).ok()?;
                Some((p, bytes))
            })
            .collect();
        files.sort_by_key(|(p, _)| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH)
        });
        if files.len() >= n && files.iter().all(|(_, b)| done(b)) {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} complete files in {}, found {:?}",
            dir.display(),
            files.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_files_within`] five seconds.
pub fn wait_files(dir: &Path, n: usize, done: impl Fn(&[u8]) -> bool) -> Vec<(PathBuf, Vec<u8>)> {
    wait_files_within(dir, n, Duration::from_secs(5), done)
}

pub fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // A connection to a port nobody listens on can be given that very port as its
    // own and "succeed" (a TCP self-connect): that is not the daemon.
    let listening = || TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != Some(addr));
    while !listening() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Postfix's smtp-sink, dumping each message into its own file.
pub struct Sink {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Sink {
    /// On 127.0.0.1, a free port.
    pub fn start(args: &[&str]) -> Sink {
        let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
        Self::start_at(addr, args)
    }

    /// smtp-sink with extra `args` (`-r RCPT`: 4xx to every RCPT, `-f RCPT`: 5xx...).
    pub fn start_at(addr: SocketAddr, args: &[&str]) -> Sink {
        let bin = require_tool("smtp-sink");
        let dir = tempfile::tempdir().unwrap();
        // smtp-sink drops root for -u's user, who must be able to write the dumps.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let mut cmd = Command::new(bin);
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
            cmd.args(["-u", "postfix"]);
        }
        cmd.arg("-d")
            .arg(format!("{}/%M.", dir.path().display()))
            .args(args)
            .arg(addr.to_string())
            .arg("100")
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("starting smtp-sink");
        wait_listening(addr, &mut child, "smtp-sink");
        Sink { child, addr, dir }
    }

    /// The dumps (smtp-sink's headers, then the message with LF line endings, then an
    /// empty line), oldest first.
    pub fn dumps(&self, n: usize) -> Vec<String> {
        self.dumps_within(n, Duration::from_secs(5))
    }

    pub fn dumps_within(&self, n: usize, within: Duration) -> Vec<String> {
        wait_files_within(self.dir.path(), n, within, |b| b.ends_with(b"\n\n"))
            .into_iter()
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    pub fn dump_count(&self) -> usize {
        std::fs::read_dir(self.dir.path()).unwrap().count()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops the sink and keeps its dumps.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The envelope recipients smtp-sink recorded in a dump (`X-Rcpt-Args:`/`RCPT` lines).
pub fn dump_recipients(dump: &str) -> Vec<String> {
    dump.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("X-Rcpt-Args: <"))
        .map(|l| l.split('>').next().unwrap_or("").to_owned())
        .collect()
}

/// dnsmasq serving `records` on 127.0.0.1:port; killed on drop.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn dnsmasq_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("dnsmasq"));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "dnsmasq is missing: these tests need a real nameserver \
         (apt-get install dnsmasq-base, or run ./run-tests as root)"
    );
}

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for UDP and TCP");
}

impl Dnsmasq {
    /// The `--txt-record=` option for one TXT record. dnsmasq cuts a text longer than
    /// 255 bytes into 255-byte strings of one record (a 2048-bit DKIM key's ~400
    /// bytes included), which resolvers join again. On its command line dnsmasq
    /// takes no quoting: every comma starts another string, so `text` may hold none
    /// (SPF, DKIM and DMARC records need none).
    pub fn txt(name: &str, text: &str) -> String {
        assert!(
            !text.contains(','),
            "dnsmasq would split the TXT text of {name} at its commas: {text:?}"
        );
        format!("--txt-record={name},{text}")
    }

    /// The `--ptr-record=` option naming `ip` (127.0.0.x, for iprev) `name`.
    pub fn ptr(ip: std::net::Ipv4Addr, name: &str) -> String {
        let [a, b, c, d] = ip.octets();
        format!("--ptr-record={d}.{c}.{b}.{a}.in-addr.arpa,{name}")
    }

    /// Every query for a name in `zone` answered REFUSED, at once: a DNS error that
    /// is neither "no such name" nor "no record" (SPF's and DMARC's temperror). The
    /// zone goes to "the standard servers", and with `--no-resolv` there are none.
    /// (Forwarding it to a dead port instead only times out, seconds later.)
    pub fn refused(zone: &str) -> String {
        format!("--server=/{zone}/#")
    }

    /// The TXT records of `name` as a resolver gets them from this server (dnspython,
    /// which python3-dkim brings): each record's character-strings, in order.
    pub fn query_txt(&self, name: &str) -> Vec<Vec<String>> {
        let python = python_with("dns.resolver", "python3-dnspython");
        let script = "import sys, dns.resolver\n\
             r = dns.resolver.Resolver(configure=False)\n\
             r.nameservers = [sys.argv[1]]; r.port = int(sys.argv[2]); r.lifetime = 5\n\
             for rr in r.resolve(sys.argv[3], 'TXT'):\n    \
             print('\\t'.join(s.decode() for s in rr.strings))\n";
        let out = Command::new(python)
            .args(["-c", script])
            .arg(self.addr.ip().to_string())
            .arg(self.addr.port().to_string())
            .arg(name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "TXT {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// dnsmasq with `records` (`--mx-host=...`, `--host-record=...`, [`Dnsmasq::txt`],
    /// [`Dnsmasq::ptr`], [`Dnsmasq::refused`]); every name under `.test` is answered
    /// by it (unknown ones NXDOMAIN).
    pub fn start(records: &[&str]) -> Dnsmasq {
        Self::start_on("127.0.0.1", free_udp_tcp_port(), records)
    }

    /// [`Dnsmasq::start`] on `ip`:`port` (a loopback address, where port 53 is free
    /// for a resolv.conf to name it).
    pub fn start_on(ip: &str, port: u16, records: &[&str]) -> Dnsmasq {
        let binary = dnsmasq_binary();
        let child = Command::new(&binary)
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--keep-in-foreground",
                "--bind-interfaces",
                "--pid-file",
                "--local=/test/",
            ])
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--port={port}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = Dnsmasq {
            child,
            addr: SocketAddr::new(ip.parse().expect("an IP address"), port),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = server.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("dnsmasq exited at start: {status} (arguments {records:?}): {stderr}");
            }
            if TcpStream::connect(server.addr).is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "dnsmasq did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A dnsmasq on 127.0.53.x:53 (the address a resolv.conf can name) with `records`,
/// and that address: for peers that read /etc/resolv.conf (run them in a mount
/// namespace where it names this one).
pub fn dnsmasq_on_53(records: &[&str]) -> (Dnsmasq, String) {
    for last in 2..250u8 {
        let ip = format!("127.0.53.{last}");
        if UdpSocket::bind((ip.as_str(), 53)).is_ok() {
            return (Dnsmasq::start_on(&ip, 53, records), ip);
        }
    }
    panic!("no 127.0.53.x address free for dnsmasq on port 53");
}

/// tests/peers/aiosmtpd_peer.py on Debian's python3 with python3-aiosmtpd.
pub struct Aio {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Holds the unix socket, apart from the messages.
    _socket_dir: Option<tempfile::TempDir>,
}

impl Aio {
    pub fn start(args: &[&str]) -> Aio {
        let (mut child, dir, line) = Self::spawn(args);
        let port = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("aiosmtpd peer did not start: {line:?}"))
            .trim();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut child, "aiosmtpd");
        Aio {
            child,
            addr,
            dir,
            _socket_dir: None,
        }
    }

    /// Listening on the unix socket `DIR/lmtp.sock` instead (`addr` is unused).
    pub fn start_unix(args: &[&str]) -> (Aio, PathBuf) {
        let socket_dir = tempfile::tempdir().unwrap();
        let path = socket_dir.path().join("lmtp.sock");
        let mut all = vec!["--unix", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let (child, dir, line) = Self::spawn(&all);
        assert_eq!(line.trim(), "ready unix", "aiosmtpd peer did not start");
        let addr = "0.0.0.0:0".parse().unwrap();
        let aio = Aio {
            child,
            addr,
            dir,
            _socket_dir: Some(socket_dir),
        };
        (aio, path)
    }

    /// Starts the peer; returns its first line of output.
    pub fn spawn(args: &[&str]) -> (Child, tempfile::TempDir, String) {
        // Debian's python3, where python3-aiosmtpd lives (not a pyenv one on PATH).
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.exists(),
            "/usr/bin/python3 is missing: apt-get install python3-aiosmtpd (or run ./run-tests)"
        );
        let check = Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "aiosmtpd is not installed: apt-get install python3-aiosmtpd (or run ./run-tests)"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aiosmtpd_peer.py");
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting aiosmtpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, dir, line)
    }

    /// (envelope, message) of each message received, in order.
    pub fn messages(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        let files = wait_files(self.dir.path(), 2 * n, |_| true);
        (1..=n)
            .map(|i| {
                let find = |ext: &str| {
                    files
                        .iter()
                        .find(|(p, _)| {
                            p.file_name().unwrap().to_string_lossy() == format!("{i}.{ext}")
                        })
                        .map(|(_, b)| b.clone())
                        .unwrap_or_else(|| panic!("no message {i}.{ext}"))
                };
                (String::from_utf8(find("env")).unwrap(), find("eml"))
            })
            .collect()
    }

    pub fn file_count(&self) -> usize {
        std::fs::read_dir(self.dir.path()).unwrap().count()
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate it signed for `localhost`, `relay.test` and 127.0.0.1 (or the
/// names given to [`Pki::for_names`]), as PEM files: `cert.pem` (the chain), `key.pem`,
/// `ca.pem`; and, for DANE's TLSA records, the DER of the leaf's SubjectPublicKeyInfo
/// and of the CA's certificate.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub leaf_spki: Vec<u8>,
    pub ca_der: Vec<u8>,
}

#[allow(clippy::new_without_default)]
impl Pki {
    pub fn new() -> Pki {
        Pki::for_names(&["localhost", "relay.test", "127.0.0.1"])
    }

    /// The leaf for these names (DNS names, wildcards, IP addresses).
    pub fn for_names(names: &[&str]) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose, PublicKeyData,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mtad test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.get(1).or(names.first()).copied().unwrap_or("test"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cert.pem"),
            format!("{}{}", cert.pem(), ca.pem()),
        )
        .unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            leaf_spki: key.subject_public_key_info(),
            ca_der: ca.der().to_vec(),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts aiosmtpd offering STARTTLS with this certificate, plus `args`.
    pub fn aio(&self, args: &[&str]) -> Aio {
        let (cert, key) = (self.path("cert.pem"), self.path("key.pem"));
        let mut all = vec!["--tls", &cert, &key];
        all.extend_from_slice(args);
        Aio::start(&all)
    }
}

/// tests/peers/filter_peer.py: an after-queue content filter (aiosmtpd) that tags the
/// message, injects it again on `reinject`, and records what it took.
pub struct FilterPeer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl FilterPeer {
    /// On 127.0.0.1:`port` (0: any free port), injecting into 127.0.0.1:`reinject`.
    pub fn start(port: u16, reinject: u16, args: &[&str]) -> FilterPeer {
        let dir = tempfile::tempdir().unwrap();
        let python = Path::new("/usr/bin/python3");
        assert!(
            python.exists(),
            "/usr/bin/python3 is missing: apt-get install python3-aiosmtpd (or run ./run-tests)"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/filter_peer.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(reinject.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the filter peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("filter peer did not start: {line:?}"));
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], port)),
            &mut child,
            "filter peer",
        );
        FilterPeer { child, port, dir }
    }

    /// (envelope with XFORWARD lines, message) of the first `n` messages it took.
    pub fn messages(&self, n: usize) -> Vec<(String, Vec<u8>)> {
        wait_files_within(self.dir.path(), 2 * n, Duration::from_secs(15), |_| true);
        (1..=n)
            .map(|i| {
                let read = |ext: &str| {
                    std::fs::read(self.dir.path().join(format!("{i}.{ext}")))
                        .unwrap_or_else(|e| panic!("message {i}.{ext}: {e}"))
                };
                (String::from_utf8(read("env")).unwrap(), read("eml"))
            })
            .collect()
    }

    /// How many messages it took.
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .count()
    }

    /// Stops the filter; what it recorded stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FilterPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL server of Debian's in a temporary data directory, on a loopback port,
/// run as the `postgres` user when we are root (initdb refuses root). Stopped on drop.
pub struct Postgres {
    bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    as_user: Option<&'static str>,
    _dir: tempfile::TempDir,
    running: bool,
}

impl Postgres {
    /// `None` (skipped) when PostgreSQL is not installed outside CI.
    pub fn start(test: &str) -> Option<Postgres> {
        let bin = postgres_bin_dir();
        if bin.is_none() {
            // fails under CI, says how to install it otherwise
            super::tool_or_skip("initdb", "postgresql", test)?;
        }
        let bin = bin.or_else(|| super::find_tool("initdb")?.parent().map(Path::to_path_buf))?;
        let dir = tempfile::tempdir().unwrap();
        // a directory we just made is ours: owned by uid 0 when we are root
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap()) == 0;
        let as_user = root.then_some("postgres");
        let data = dir.path().join("data");
        if as_user.is_some() {
            // the postgres user must be able to reach and own its directory
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let mut pg = Postgres {
            bin,
            data,
            port: super::free_port(),
            as_user,
            _dir: dir,
            running: false,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.resume();
        Some(pg)
    }

    /// Starts the server (again, after [`stop`](Self::stop)) on the same port and data.
    pub fn resume(&mut self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.data.to_str().unwrap()
        );
        let log = self.data.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        self.running = true;
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn sql(&self, statement: &str) {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ],
        );
    }

    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            self.run(
                "pg_ctl",
                &[
                    "-D",
                    self.data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let _ = self
                .command("pg_ctl")
                .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// Debian keeps the server binaries in /usr/lib/postgresql/VERSION/bin; the newest wins.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

/// A MariaDB server of Debian's in a temporary data directory, on a free loopback
/// port and a Unix socket in that directory, with real grants: [`Mariadb::USER`] may
/// only SELECT in [`Mariadb::DATABASE`] and must give [`Mariadb::PASSWORD`]; root
/// (no password, for [`Mariadb::sql`]) only over the socket. As root, mariadbd runs
/// as root (`--user=root`: it refuses root otherwise). Stopped on drop.
pub struct Mariadb {
    server: PathBuf,
    client: PathBuf,
    pub port: u16,
    /// The server's Unix socket.
    pub socket: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// How long the first start took (data directory, server, grants).
    pub started_in: Duration,
}

impl Mariadb {
    pub const USER: &str = "mtad";
    pub const PASSWORD: &str = "mtad-db-pw";
    pub const DATABASE: &str = "mail";

    /// Options shared by mariadb-install-db and mariadbd: nothing read from /etc,
    /// durability traded for speed (the data lives as long as the test).
    const FAST: &[&str] = &[
        "--innodb-flush-method=nosync",
        "--innodb-log-file-size=4M",
        "--innodb-buffer-pool-size=16M",
        "--innodb-doublewrite=0",
        "--skip-name-resolve",
    ];

    /// `None` (skipped) when MariaDB is not installed outside CI.
    pub fn start(test: &str) -> Option<Mariadb> {
        let started = Instant::now();
        let server = super::tool_or_skip("mariadbd", "mariadb-server", test)?;
        let install = super::tool_or_skip("mariadb-install-db", "mariadb-server", test)?;
        let client = super::tool_or_skip("mariadb", "mariadb-client", test)?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut db = Mariadb {
            server,
            client,
            port: super::free_port(),
            socket: dir.path().join("mysqld.sock"),
            dir,
            child: None,
            started_in: Duration::ZERO,
        };
        std::fs::create_dir(db.tmpdir()).unwrap();
        let out = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", db.tmpdir().display()))
            .args(db.user_arg())
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(Self::FAST)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        db.serve();
        let (user, password, database) = (Self::USER, Self::PASSWORD, Self::DATABASE);
        db.root_sql(
            None,
            &format!(
                "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost'; \
             CREATE DATABASE {database}; \
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; \
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'; \
             GRANT SELECT ON {database}.* TO '{user}'@'127.0.0.1', '{user}'@'localhost'; \
             FLUSH PRIVILEGES"
            ),
        );
        db.started_in = started.elapsed();
        Some(db)
    }

    /// mariadbd refuses to run as root unless told to.
    /// Its own temporary directory: concurrent instances sharing /tmp had their
    /// internal temporary tables (`/tmp/#sql-temptable-...`) go missing under them,
    /// failing `mariadb-install-db` now and then.
    fn tmpdir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn user_arg(&self) -> Option<&'static str> {
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(self.dir.path()).unwrap()) == 0;
        root.then_some("--user=root")
    }

    /// Starts mariadbd and waits until it answers a query over its socket.
    fn serve(&mut self) {
        assert!(self.child.is_none(), "mariadbd is already running");
        let dir = self.dir.path();
        let mut child = Command::new(&self.server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--tmpdir={}", self.tmpdir().display()))
            .args(self.user_arg())
            .args(["--bind-address=127.0.0.1", "--skip-log-bin"])
            .args(Self::FAST)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "mariadbd exited before answering ({status}): {}",
                    self.log()
                );
            }
            if self
                .root_client()
                .arg("-e")
                .arg("SELECT 1")
                .output()
                .unwrap()
                .status
                .success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd never answered: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn root_client(&self) -> Command {
        let mut c = Command::new(&self.client);
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch"]);
        c
    }

    /// `mysql://USER:PASSWORD@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{}",
            Self::USER,
            Self::PASSWORD,
            self.port,
            Self::DATABASE
        )
    }

    /// Runs `statements` as root in [`Mariadb::DATABASE`].
    pub fn sql(&self, statements: &str) {
        self.root_sql(Some(Self::DATABASE), statements);
    }

    fn root_sql(&self, database: Option<&str>, statements: &str) {
        let mut client = self.root_client();
        if let Some(database) = database {
            client.arg(format!("--database={database}"));
        }
        let out = client.arg("-e").arg(statements).output().unwrap();
        assert!(
            out.status.success(),
            "mariadb -e {statements:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Shuts the server down (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("mariadbd did not stop within 30s: {}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the stopped server again on the same port, socket and data.
    pub fn restart(&mut self) {
        self.serve();
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// OpenDKIM (Debian's opendkim and opendkim-tools), the DKIM filter most MTAs run
/// beside them, as a second implementation to sign and verify against.
///
/// `opendkim -t FILE` runs the real filter on one message without a milter
/// connection: with `Mode s` it prints the DKIM-Signature it would insert, with
/// `Mode v` the Authentication-Results it would add. (opendkim-testmsg would be the
/// obvious tool, but it only signs rsa-sha1, and its verifier has no configuration
/// to point at our DNS.) Debian builds opendkim on libunbound: `Nameservers
/// 127.0.0.1@PORT` would reach dnsmasq's port (unbound's syntax; `#PORT` and a bare
/// address go to port 53), but unbound answers RFC 6761 names such as `.test` itself
/// (NXDOMAIN, "key not found in DNS") without asking. So verification reads an
/// unbound configuration (`ResolverConfiguration`) that forwards every name to
/// dnsmasq, lets it query loopback and lifts the `test.` local zone.
pub struct Opendkim {
    dir: tempfile::TempDir,
}

impl Opendkim {
    fn binary() -> PathBuf {
        require_tool("opendkim")
    }

    fn new() -> Opendkim {
        Opendkim {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `opendkim -x CONF -t MESSAGE -vvv`: (success, stdout, stderr).
    fn run(&self, conf: &str, message: &[u8]) -> (bool, String, String) {
        let conf_path = self.dir.path().join("opendkim.conf");
        // the keys live under /tmp, which every user can write
        let conf = format!("Syslog no\nRequireSafeKeys false\n{conf}");
        std::fs::write(&conf_path, conf).unwrap();
        let message_path = self.dir.path().join("message.eml");
        std::fs::write(&message_path, crlf(message)).unwrap();
        let out = Command::new(Self::binary())
            .arg("-x")
            .arg(&conf_path)
            .arg("-t")
            .arg(&message_path)
            .arg("-vvv")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `message` with every line ending CRLF (smtp-sink dumps with LF).
pub fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40);
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The value of the header opendkim's test mode says it would insert
/// (`### INSHEADER: idx=0 hname='NAME' hvalue='VALUE'`, VALUE folded over lines).
fn inserted_header(stdout: &str, name: &str) -> Option<String> {
    let start = format!("hname='{name}' hvalue='");
    let at = stdout.find(&start)? + start.len();
    let value = &stdout[at..];
    let end = value
        .find("'\n")
        .unwrap_or_else(|| value.trim_end().trim_end_matches('\'').len());
    Some(value[..end].to_owned())
}

/// `opendkim-genkey -b 2048` into `dir`: (the private key file, the TXT record's
/// text for `SELECTOR._domainkey.DOMAIN`, its quoted strings joined).
pub fn opendkim_genkey(dir: &Path, domain: &str, selector: &str) -> (PathBuf, String) {
    let out = Command::new(require_tool("opendkim-genkey"))
        .args(["-b", "2048", "-d", domain, "-s", selector, "-D"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opendkim-genkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zone = std::fs::read_to_string(dir.join(format!("{selector}.txt"))).unwrap();
    let text: String = zone.split('"').skip(1).step_by(2).collect();
    assert!(text.starts_with("v=DKIM1;"), "{zone}");
    (dir.join(format!("{selector}.private")), text)
}

/// The message signed by opendkim (rsa-sha256, relaxed/relaxed, its default header
/// list) as `domain`'s `selector` with the PEM key at `key`: its DKIM-Signature on
/// top of the message, CRLF throughout. The From: domain must be `domain` or under it.
pub fn opendkim_sign(message: &[u8], domain: &str, selector: &str, key: &Path) -> Vec<u8> {
    let peer = Opendkim::new();
    let conf = format!(
        "Mode s\nDomain {domain}\nSubDomains yes\nSelector {selector}\nKeyFile {}\n\
         SignatureAlgorithm rsa-sha256\nCanonicalization relaxed/relaxed\n",
        key.display()
    );
    let (ok, stdout, stderr) = peer.run(&conf, message);
    let value = inserted_header(&stdout, "DKIM-Signature")
        .filter(|_| ok)
        .unwrap_or_else(|| panic!("opendkim did not sign: {stdout}{stderr}"));
    let mut signed = format!("DKIM-Signature: {}\r\n", value.replace('\n', "\r\n")).into_bytes();
    signed.extend(crlf(message));
    signed
}

/// An unbound configuration in `dir` for OpenDKIM's `ResolverConfiguration`: every
/// query forwarded to `dns` (a [`Dnsmasq`]), `.test` included. Returns its path.
pub fn unbound_conf(dir: &Path, dns: SocketAddr) -> PathBuf {
    let unbound = dir.join("unbound.conf");
    std::fs::write(
        &unbound,
        format!(
            "server:\n    do-not-query-localhost: no\n    local-zone: \"test.\" nodefault\n\
             forward-zone:\n    name: \".\"\n    forward-addr: {}@{}\n",
            dns.ip(),
            dns.port()
        ),
    )
    .unwrap();
    unbound
}

/// Every DKIM signature of `message` verified by opendkim, the keys looked up at the
/// nameserver `dns` (a [`Dnsmasq`]): `Ok` with opendkim's Authentication-Results
/// when there is one signature at least and every one passed, `Err` with that and
/// its log otherwise.
pub fn opendkim_verify(message: &[u8], dns: SocketAddr) -> Result<String, String> {
    let peer = Opendkim::new();
    let unbound = unbound_conf(peer.dir.path(), dns);
    let conf = format!(
        "Mode v\nAuthservID opendkim.test\nAlwaysAddARHeader yes\nDNSTimeout 5\n\
         ResolverConfiguration {}\n",
        unbound.display()
    );
    let (ok, stdout, stderr) = peer.run(&conf, message);
    let Some(results) = inserted_header(&stdout, "Authentication-Results") else {
        return Err(format!("opendkim gave no results: {stdout}{stderr}"));
    };
    let verdicts: Vec<&str> = results
        .split(';')
        .filter_map(|r| r.trim().strip_prefix("dkim="))
        .map(|r| r.split_whitespace().next().unwrap_or(""))
        .collect();
    if ok && !verdicts.is_empty() && verdicts.iter().all(|v| *v == "pass") {
        Ok(results)
    } else {
        Err(format!("{results}\n{stderr}"))
    }
}

/// Debian's python3 with these modules, or a failure that says what to install.
fn python_with(modules: &str, packages: &str) -> &'static Path {
    let python = Path::new("/usr/bin/python3");
    let probe = Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 lacks {modules}: apt-get install {packages} (or run ./run-tests)"
    );
    python
}

/// Runs tests/peers/SCRIPT on `message` with `NAME=TXT` records: `Ok`/`Err` with
/// its report by its exit status.
fn python_verifier(
    mode: &str,
    message: &[u8],
    records: &[(String, String)],
) -> Result<String, String> {
    let python = python_with("dkim, nacl", "python3-dkim python3-nacl");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dkimpy_verify.py");
    let out = Command::new(python)
        .arg(script)
        .arg(mode)
        .arg(file.path())
        .args(records.iter().map(|(n, t)| format!("{n}={t}")))
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

/// Every DKIM signature of `message` verified by python3-dkim (dkimpy,
/// tests/peers/dkimpy_verify.py) with `records` ((`SEL._domainkey.DOMAIN`, text)) as
/// its DNS: one "pass d= s= a=" or "fail ..." line per signature.
pub fn dkimpy_verify(message: &[u8], records: &[(String, String)]) -> Result<String, String> {
    python_verifier("dkim", message, records)
}

/// The ARC chain of `message` verified by python3-dkim (tests/peers/dkimpy_verify.py)
/// with `records` as its DNS: `Ok` when the chain validates (cv=pass).
pub fn arc_verify(message: &[u8], records: &[(String, String)]) -> Result<String, String> {
    python_verifier("arc", message, records)
}

/// A throw-away Postfix, for comparisons: its own config and queue directories in a
/// tempdir, `main_cf` after the settings every instance needs (directories, log file,
/// IPv4 on loopback), the services tests use in master.cf, and with `smtpd` an SMTP
/// server on 127.0.0.1:[`Postfix::port`]. Started by `postfix start` (as root);
/// stopped on drop.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    /// The smtpd's port (0 without one).
    pub port: u16,
}

impl Postfix {
    pub fn start(main_cf: &str, smtpd: bool) -> Postfix {
        let postfix = require_tool("postfix");
        let dir = tempfile::tempdir().unwrap();
        let pf = dir.path();
        for d in ["etc", "spool", "data"] {
            std::fs::create_dir(pf.join(d)).unwrap();
        }
        let chown = Command::new("chown")
            .arg("postfix:postfix")
            .arg(pf.join("data"))
            .status()
            .unwrap();
        assert!(chown.success(), "chown postfix (tests run as root)");
        let p = pf.display();
        std::fs::write(
            pf.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 config_directory = {p}/etc\n\
                 queue_directory = {p}/spool\n\
                 data_directory = {p}/data\n\
                 maillog_file_prefixes = {p}\n\
                 maillog_file = {p}/maillog\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 biff = no\n\
                 {main_cf}\n"
            ),
        )
        .unwrap();
        let port = if smtpd { super::free_port() } else { 0 };
        let mut master = if smtpd {
            format!("127.0.0.1:{port} inet n - n - - smtpd\n")
        } else {
            String::new()
        };
        for line in [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ] {
            master.push_str(line);
            master.push('\n');
        }
        std::fs::write(pf.join("etc/master.cf"), master).unwrap();
        let out = Command::new(postfix)
            .arg("-c")
            .arg(pf.join("etc"))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postfix start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let started = Postfix { dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while smtpd && TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Postfix did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        started
    }

    /// The configuration directory, for `-c`/`-C`.
    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.etc())
            .arg("stop")
            .output();
    }
}

/// HAProxy in TCP mode in front of mtad: round robin over `backends`, each `server` line
/// with `send_proxy` (`send-proxy`, `send-proxy-v2`).
pub struct Haproxy {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(backends: &[u16], send_proxy: &str) -> Haproxy {
        Self::start_with(backends, send_proxy, "")
    }

    /// [`Haproxy::start`] with more lines for the `listen` section (`    option
    /// redispatch`: a connection a dead backend refuses goes to another one).
    pub fn start_with(backends: &[u16], send_proxy: &str, listen: &str) -> Haproxy {
        let bin = require_tool("haproxy");
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let cfg = dir.path().join("haproxy.cfg");
        let mut text = format!(
            "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\nlisten smtp\n    bind 127.0.0.1:{port}\n    balance roundrobin\n{listen}"
        );
        for (i, backend) in backends.iter().enumerate() {
            text.push_str(&format!(
                "    server mtad{i} 127.0.0.1:{backend} {send_proxy}\n"
            ));
        }
        std::fs::write(&cfg, text).unwrap();
        let mut child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting haproxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("haproxy exited: {status}");
            }
            assert!(Instant::now() < deadline, "haproxy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Haproxy {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tests/peers/https_peer.py: python3's http.server over TLS serving a directory (the
/// MTA-STS policy under `.well-known/`), with `--redirect` answering every GET with a
/// redirect instead.
pub struct Https {
    child: Child,
    pub port: u16,
}

impl Https {
    pub fn start(root: &Path, certs: &Path, redirect: bool) -> Https {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/https_peer.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script)
            .arg(root)
            .arg(certs.join("cert.pem"))
            .arg(certs.join("key.pem"));
        if redirect {
            cmd.arg("--redirect");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (apt-get install python3)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the HTTPS peer did not start: {line:?}"));
        Https { child, port }
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
