//! A containerd or dockerd of a test's own, to kill, restart or starve of disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::containerd::against_containerd;
use super::daemons::{daemons, Daemons};
use super::run::{offline_images, run, stdout_of, temp_dir};

/// A containerd of a test's own (its own root, state and socket), to kill, restart or starve
/// of disk space without disturbing the daemons other tests use. Configured as
/// scripts/lib.sh's `oi_start_containerd` configures the shared one.
pub struct PrivateContainerd {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub socket: PathBuf,
    child: Option<std::process::Child>,
    /// A tmpfs mounted as `root`, unmounted on drop.
    mounted: bool,
    /// The directory of the containerd and ctr of a version of the matrix; `None`: the
    /// machine's own.
    bin: Option<PathBuf>,
    /// The network namespace it runs in (`ip netns exec`); `None`: the test's own.
    netns: Option<String>,
}

/// How [`PrivateContainerd::start_cri_with`] differs from a plain CRI node.
#[derive(Default)]
pub struct CriOptions {
    /// See [`PrivateContainerd`]'s `bin`.
    pub bin: Option<PathBuf>,
    /// See [`PrivateContainerd`]'s `netns`.
    pub netns: Option<String>,
    /// The CRI registry's `config_path` (the certs.d of hosts.toml files).
    pub config_path: Option<PathBuf>,
}

impl PrivateContainerd {
    /// Start one; with `root_mib`, its root is a tmpfs of that many MiB.
    pub fn start(label: &str, root_mib: Option<u64>) -> PrivateContainerd {
        let mut c = PrivateContainerd::configure(label, root_mib, None);
        c.restart();
        c
    }

    /// Its directories and configuration, not started yet; `bin`: see the field.
    fn configure(label: &str, root_mib: Option<u64>, bin: Option<PathBuf>) -> PrivateContainerd {
        let dir = temp_dir(label);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut mounted = false;
        if let Some(mib) = root_mib {
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&root));
            mounted = true;
        }
        let socket = dir.join("containerd.sock");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root.display(),
                dir.join("state").display(),
                socket.display(),
                socket.display()
            ),
        )
        .unwrap();
        PrivateContainerd {
            dir,
            root,
            socket,
            child: None,
            mounted,
            bin,
            netns: None,
        }
    }

    /// Start one with the CRI plugin enabled, as on a Kubernetes node: its sandbox (pause)
    /// image is `sandbox_image`, its snapshotter `native` (not the default, so that a client
    /// that reads it can be told from one that does not), its CNI directories empty (pods use
    /// the host network), its streaming server on a free port of 127.0.0.1. With
    /// `restrict_oom_score_adj`, as containerd runs unprivileged or nested: this machine takes
    /// `CAP_SYS_RESOURCE` from its root, so runc cannot give a pod sandbox the OOM score of
    /// -998 the CRI asks for ("failed to update /proc/self/oom_score_adj: Permission denied",
    /// then "can't get final child's PID from pipe"); the CRI then keeps containerd's own.
    pub fn start_cri(label: &str, sandbox_image: &str) -> PrivateContainerd {
        PrivateContainerd::start_cri_with(label, sandbox_image, CriOptions::default())
    }

    /// [`PrivateContainerd::start_cri`], of another version, in a network namespace, or with
    /// a registry `config_path`, as `opts` says.
    pub fn start_cri_with(label: &str, sandbox_image: &str, opts: CriOptions) -> PrivateContainerd {
        let dir = temp_dir(label);
        let root = dir.join("root");
        for d in ["root", "cni-bin", "cni-conf"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let socket = dir.join("containerd.sock");
        let mut config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{sandbox_image}\"\n\
             \x20 stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\
             \x20 restrict_oom_score_adj = true\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"native\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{bin}\"\n  conf_dir = \"{conf}\"\n",
            root = root.display(),
            state = dir.join("state").display(),
            sock = socket.display(),
            bin = dir.join("cni-bin").display(),
            conf = dir.join("cni-conf").display(),
        );
        if let Some(path) = &opts.config_path {
            config.push_str(&format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{}\"\n",
                path.display()
            ));
        }
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut c = PrivateContainerd {
            dir,
            root,
            socket,
            child: None,
            mounted: false,
            bin: opts.bin,
            netns: opts.netns,
        };
        c.restart();
        c
    }

    /// Start (again) on the same root and socket, and wait until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "containerd is still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let mut containerd = Command::new("containerd");
        if let Some(bin) = &self.bin {
            // Its own shim too, found on PATH.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![bin.clone()];
            dirs.extend(std::env::split_paths(&path));
            containerd = Command::new(bin.join("containerd"));
            containerd.env("PATH", std::env::join_paths(dirs).unwrap());
        }
        if let Some(ns) = &self.netns {
            let mut inside = Command::new("ip");
            inside
                .args(["netns", "exec", ns])
                .arg(containerd.get_program());
            for (k, v) in containerd.get_envs() {
                if let Some(v) = v {
                    inside.env(k, v);
                }
            }
            containerd = inside;
        }
        self.child = Some(
            containerd
                .arg("--config")
                .arg(self.dir.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("containerd is installed"),
        );
        wait_until_up("containerd", 30, &self.dir.join("containerd.log"), || {
            let mut c = self.ctr("default");
            c.arg("version");
            c
        });
    }

    /// SIGKILL, as a crash or an OOM kill would stop it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ctr(&self, ns: &str) -> Command {
        let mut c = match &self.bin {
            Some(bin) => Command::new(bin.join("ctr")),
            None => Command::new("ctr"),
        };
        c.arg("-a").arg(&self.socket).arg("-n").arg(ns);
        c
    }

    /// [`PrivateContainerd::start`] (no tmpfs) with the containerd of `d`, a version of the
    /// matrix (the machine's own for the default pair).
    pub fn start_version(label: &str, d: &Daemons) -> PrivateContainerd {
        let bin = d.ctr.parent().filter(|p| !p.as_os_str().is_empty());
        let mut c = PrivateContainerd::configure(label, None, bin.map(Path::to_path_buf));
        c.restart();
        c
    }

    /// SIGSTOP for `how_long`, then SIGCONT: a containerd that answers nothing for a while (a
    /// starved node, a disk that stalls), and then goes on.
    pub fn pause(&self, how_long: std::time::Duration) {
        let pid = self
            .child
            .as_ref()
            .expect("containerd is running")
            .id()
            .to_string();
        run(Command::new("kill").args(["-STOP", &pid]));
        std::thread::sleep(how_long);
        run(Command::new("kill").args(["-CONT", &pid]));
    }

    /// Image names in `ns`.
    pub fn images(&self, ns: &str) -> Vec<String> {
        stdout_of(self.ctr(ns).args(["images", "ls", "-q"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `offline-images import` of `images` into `ns` of this containerd.
    pub fn import(&self, images: &Path, ns: &str) -> Command {
        let mut c = against_containerd("import", images, ns);
        // The same flags as against_containerd, with this daemon's socket.
        let args: Vec<std::ffi::OsString> = c.get_args().map(Into::into).collect();
        let mut own = offline_images();
        for (i, a) in args.iter().enumerate() {
            if i > 0 && args[i - 1] == "--containerd-address" {
                own.arg(&self.socket);
            } else {
                own.arg(a);
            }
        }
        for (k, v) in c.get_envs() {
            match v {
                None => own.env_remove(k),
                Some(v) => own.env(k, v),
            };
        }
        c = own;
        c
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.kill();
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
        super::run::remove_unless_panicking(&self.dir);
    }
}

/// A dockerd of a test's own, on a private containerd, to restart during a run.
pub struct PrivateDockerd {
    pub containerd: PrivateContainerd,
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateDockerd {
    pub fn start(label: &str) -> PrivateDockerd {
        let containerd = PrivateContainerd::start(&format!("{label}-containerd"), None);
        let dir = temp_dir(label);
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let mut d = PrivateDockerd {
            containerd,
            socket: dir.join("docker.sock"),
            dir,
            child: None,
        };
        d.restart();
        d
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "dockerd is still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let d = &self.dir;
        self.child = Some(
            Command::new("dockerd")
                .arg("--host")
                .arg(self.host())
                .arg("--data-root")
                .arg(d.join("data"))
                .arg("--exec-root")
                .arg(d.join("exec"))
                .arg("--pidfile")
                .arg(d.join("docker.pid"))
                .arg("--containerd")
                .arg(&self.containerd.socket)
                .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
                .arg("--config-file")
                .arg(d.join("daemon.json"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("dockerd is installed"),
        );
        wait_until_up("dockerd", 60, &self.dir.join("dockerd.log"), || {
            let mut c = self.docker();
            c.arg("version");
            c
        });
    }

    /// SIGKILL dockerd (its containerd stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn docker(&self) -> Command {
        let mut c = Command::new(&daemons().docker_cli);
        c.env("DOCKER_HOST", self.host());
        c
    }

    /// `docker image inspect --format {{.Id}}` on this daemon.
    pub fn image_id(&self, image: &str) -> Option<String> {
        let out = self
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `offline-images import` of `images` into this dockerd.
    pub fn import(&self, images: &Path) -> Command {
        let mut c = offline_images();
        c.arg("import")
            .arg("--images-path")
            .arg(images)
            .args(["--runtime", "docker", "--docker-host"])
            .arg(self.host());
        for v in [
            "IMAGE_RUNTIME",
            "CONTAINERD_ADDRESS",
            "DOCKER_HOST",
            "HOST_ROOT",
            "IMAGES_PATH",
            "LOG_FORMAT",
            "IMPORT_STRICT",
        ] {
            c.env_remove(v);
        }
        c
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // SIGTERM first: dockerd unmounts what it mounted.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(mut c) = self.child.take() {
            let exited = (0..100).any(|_| {
                let done = c.try_wait().ok().flatten().is_some();
                if !done {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                done
            });
            if !exited {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if !std::thread::panicking() {
            // A dockerd killed by its test left its bind mount of the data root.
            super::run::unmount_under(&self.dir);
        }
        super::run::remove_unless_panicking(&self.dir);
    }
}

/// Retry `probe` (a command that succeeds once the daemon answers) for up to `secs` seconds;
/// panic with the daemon's log if it never does.
pub fn wait_until_up(name: &str, secs: u64, log: &Path, probe: impl Fn() -> Command) {
    for _ in 0..secs * 10 {
        if probe()
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "the private {name} did not come up:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
