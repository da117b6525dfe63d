//! End to end: what a web page in a developer's browser can make a local regserve do, tried
//! with raw HTTP as the browser would send it. Cross-site "simple" requests (`text/plain`,
//! forms, no `Content-Type`), foreign `Origin`/`Referer`/`Sec-Fetch-Site`, DNS rebinding
//! (`Host: evil.example`) on reads, downloads and writes — all refused AND not executed (the
//! registry is checked afterwards); this server's own pages and the MLflow client's requests
//! still work; the UI's login is a signed, expiring session that the API does not take, and
//! logging out needs a same-origin POST.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Registry, Server};
use serde_json::{json, Value};

const API: &str = "/api/2.0/mlflow";
const ARTIFACTS: &str = "/api/2.0/mlflow-artifacts/artifacts";
const TOKEN: &str = "web-s3cret-token";

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str()).collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// One request exactly as written: `Host` is the server's address unless `headers` give one;
/// `Content-Length` follows the body for any method but GET.
fn raw(s: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let addr = addr(s);
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    parse(&out)
}

fn parse(out: &[u8]) -> Resp {
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut body = out[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = decoded;
    }
    Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

fn json_post(s: &Server, path: &str, body: Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    raw(s, "POST", &format!("{API}/{path}"), &headers, body.to_string().as_bytes())
}

fn model_exists(s: &Server, name: &str) -> bool {
    let r = raw(s, "GET", &format!("{API}/registered-models/get?name={name}"), &[], b"");
    match r.status {
        200 => true,
        404 => false,
        other => panic!("get {name}: {other} {}", r.body),
    }
}

fn description(s: &Server, name: &str) -> String {
    let r = raw(s, "GET", &format!("{API}/registered-models/get?name={name}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["registered_model"]["description"].as_str().unwrap_or("").to_string()
}

fn start_server(reg: &Registry, extra: &[&str], token: bool) -> Server {
    let mut cmd = reg.cmd();
    cmd.args(["server", "--host", "127.0.0.1", "--port", "0"]).args(extra).env("RUST_LOG", "info");
    if token {
        cmd.env("REGSERVE_AUTH_TOKEN", TOKEN);
    }
    Server::start(cmd)
}

#[test]
fn the_rest_api_reads_only_bodies_declared_json() {
    let reg = Registry::new();
    let s = start_server(&reg, &[], false);
    let body = |name: &str| json!({"name": name, "description": "d"}).to_string();

    // What a cross-site <form> or fetch() may send without a preflight, and a missing type.
    let refused: [(&str, Option<&str>); 6] = [
        ("plain", Some("text/plain")),
        ("plainjson", Some("text/plain; charset=application/json")),
        ("form", Some("application/x-www-form-urlencoded")),
        ("multi", Some("multipart/form-data; boundary=x")),
        ("jsonish", Some("application/jsonp")),
        ("none", None),
    ];
    for (name, ct) in refused {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let r = raw(&s, "POST", &format!("{API}/registered-models/create"), &headers, body(name).as_bytes());
        assert_eq!(r.status, 400, "{ct:?}: {}", r.body);
        assert_eq!(r.json()["error_code"], "INVALID_PARAMETER_VALUE", "{ct:?}");
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains("Content-Type"), "{ct:?}: {msg}");
        assert!(!model_exists(&s, name), "{ct:?} created the model");
    }
    // A POST with no body at all still has to say what it is (as MLflow).
    let r = raw(&s, "POST", &format!("{API}/runs/create"), &[], b"");
    assert_eq!((r.status, r.json()["message"].as_str()), (400, Some("Bad Request. Content-Type header is missing.")));

    // JSON (with a charset, any case) is read.
    for (name, ct) in [("ok1", "application/json"), ("ok2", "Application/JSON; charset=utf-8")] {
        let r =
            raw(&s, "POST", &format!("{API}/registered-models/create"), &[("Content-Type", ct)], body(name).as_bytes());
        assert_eq!(r.status, 200, "{ct}: {}", r.body);
        assert!(model_exists(&s, name));
    }

    // PATCH and DELETE with a body are held to the same rule; nothing changes.
    let patch = json!({"name": "ok1", "description": "changed"}).to_string();
    let r = raw(
        &s,
        "PATCH",
        &format!("{API}/registered-models/update"),
        &[("Content-Type", "text/plain")],
        patch.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(description(&s, "ok1"), "d");
    let del = json!({"name": "ok1"}).to_string();
    for headers in [vec![("Content-Type", "text/plain")], vec![]] {
        let r = raw(&s, "DELETE", &format!("{API}/registered-models/delete"), &headers, del.as_bytes());
        assert_eq!(r.status, 400, "{headers:?}: {}", r.body);
        assert!(model_exists(&s, "ok1"));
    }
    let r = raw(
        &s,
        "DELETE",
        &format!("{API}/registered-models/delete"),
        &[("Content-Type", "application/json")],
        del.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!model_exists(&s, "ok1"));

    // GET with query parameters is unaffected; the artifact proxy takes raw bytes.
    assert_eq!(raw(&s, "GET", &format!("{API}/registered-models/search?max_results=5"), &[], b"").status, 200);
    let put = raw(
        &s,
        "PUT",
        &format!("{ARTIFACTS}/0/scratch/a.bin"),
        &[("Content-Type", "application/octet-stream")],
        b"\x00\x01",
    );
    assert_eq!(put.status, 200, "{}", put.body);
    let put = raw(&s, "PUT", &format!("{ARTIFACTS}/0/scratch/b.txt"), &[], b"no type");
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(raw(&s, "GET", &format!("{ARTIFACTS}/0/scratch/b.txt"), &[], b"").body, "no type");
}

#[test]
fn cross_origin_state_changes_are_refused_and_not_executed() {
    let reg = Registry::new();
    let s = start_server(&reg, &[], false);
    let own = s.base.clone();
    let other_port = format!("http://127.0.0.1:{}", addr(&s).rsplit(':').next().unwrap().parse::<u32>().unwrap() + 1);
    let foreign: Vec<Vec<(&str, &str)>> = vec![
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", other_port.as_str())],
        vec![("Origin", "http://evil.example"), ("Referer", own.as_str())],
        vec![("Referer", "http://evil.example/page.html")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
    ];
    assert_eq!(json_post(&s, "registered-models/create", json!({"name": "keep"}), &[]).status, 200);
    for (i, headers) in foreign.iter().enumerate() {
        let name = format!("evil{i}");
        let r = json_post(&s, "registered-models/create", json!({"name": name}), headers);
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.body.starts_with("Cross-origin request blocked"), "{}", r.body);
        assert!(!model_exists(&s, &name), "{headers:?} created a model");

        let r = raw(
            &s,
            "DELETE",
            &format!("{API}/registered-models/delete"),
            &[&[("Content-Type", "application/json")], &headers[..]].concat(),
            json!({"name": "keep"}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 403, "{headers:?}");
        assert!(model_exists(&s, "keep"));

        let path = format!("{ARTIFACTS}/0/evil/{i}.txt");
        let r = raw(&s, "PUT", &path, headers, b"planted");
        assert_eq!(r.status, 403, "{headers:?}");
        assert_eq!(raw(&s, "GET", &path, &[], b"").status, 404, "{headers:?} planted a file");

        // The UI's forms too (a cross-site <form> posts urlencoded).
        let r = raw(
            &s,
            "POST",
            "/models",
            &[&[("Content-Type", "application/x-www-form-urlencoded")], &headers[..]].concat(),
            format!("name={name}").as_bytes(),
        );
        assert_eq!(r.status, 403, "{headers:?}");
        assert!(!model_exists(&s, &name));
    }
    // This server's own pages may post; clients without any browser header (MLflow's) may too.
    let same = [("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")];
    assert_eq!(json_post(&s, "registered-models/create", json!({"name": "mine"}), &same).status, 200);
    let referer = format!("{own}/");
    assert_eq!(
        json_post(&s, "registered-models/create", json!({"name": "mine2"}), &[("Referer", &referer)]).status,
        200
    );
    let r = raw(
        &s,
        "POST",
        "/models",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Origin", &own)],
        b"name=fromui",
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(model_exists(&s, "fromui"));
    // A foreign Origin on a read is no state change: answered (the browser keeps the answer
    // from the page, as no CORS header allows it).
    let r =
        raw(&s, "GET", &format!("{API}/registered-models/get?name=mine"), &[("Origin", "http://evil.example")], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn rebinding_hosts_are_refused_on_reads_downloads_and_writes() {
    let reg = Registry::new();
    let s = start_server(&reg, &[], false);
    let port = addr(&s).rsplit(':').next().unwrap().to_string();
    assert_eq!(json_post(&s, "registered-models/create", json!({"name": "m"}), &[]).status, 200);
    assert_eq!(raw(&s, "PUT", &format!("{ARTIFACTS}/0/files/model.onnx"), &[], b"weights").status, 200);

    let evil_port = format!("evil.example:{port}");
    let rebinding = ["evil.example", evil_port.as_str(), "127.0.0.1.nip.io", "localhost.evil.example", ""];
    for host in rebinding {
        let h = [("Host", host)];
        for path in [
            "/".to_string(),
            "/models/m".to_string(),
            format!("{API}/registered-models/search"),
            format!("{API}/registered-models/get?name=m"),
            format!("{ARTIFACTS}/0/files/model.onnx"),
            format!("{ARTIFACTS}/0"),
            "/api/3.0/mlflow/server-info".to_string(),
            "/static/style.css".to_string(),
        ] {
            let r = raw(&s, "GET", &path, &h, b"");
            assert_eq!(r.status, 403, "GET {path} with Host {host:?}: {}", r.body);
            assert!(r.body.starts_with("Invalid Host header - possible DNS rebinding attack detected"), "{}", r.body);
            assert!(!r.body.contains("weights"));
        }
        let r = json_post(&s, "registered-models/create", json!({"name": "rebound"}), &h);
        assert_eq!(r.status, 403);
        let r = raw(&s, "PUT", &format!("{ARTIFACTS}/0/files/model.onnx"), &h, b"replaced");
        assert_eq!(r.status, 403);
        let r = raw(
            &s,
            "POST",
            "/models",
            &[("Host", host), ("Content-Type", "application/x-www-form-urlencoded")],
            b"name=rebound",
        );
        assert_eq!(r.status, 403);
        // Probes answer whatever the Host (Kubernetes sends the pod IP; nothing to steal).
        for probe in ["/health", "/version"] {
            assert_eq!(raw(&s, "GET", probe, &h, b"").status, 200, "{probe} with Host {host:?}");
        }
    }
    assert!(!model_exists(&s, "rebound"));
    assert_eq!(raw(&s, "GET", &format!("{ARTIFACTS}/0/files/model.onnx"), &[], b"").body, "weights");
    assert!(s.log().contains("refused a request whose Host is not allowed"));

    // Loopback names and addresses, on any port, are this machine.
    for host in
        [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "LOCALHOST".to_string(), "127.0.0.1:1".to_string()]
    {
        assert_eq!(raw(&s, "GET", "/", &[("Host", &host)], b"").status, 200, "{host}");
    }

    // An explicit list replaces the default; `*` allows all.
    let named = start_server(&reg, &["--allowed-hosts", "registry.example, *.corp.example"], false);
    for (host, status) in [
        ("registry.example", 200),
        ("registry.example:8443", 200),
        ("a.corp.example", 200),
        ("127.0.0.1", 403),
        ("evil.example", 403),
    ] {
        assert_eq!(
            raw(&named, "GET", &format!("{API}/registered-models/search"), &[("Host", host)], b"").status,
            status,
            "{host}"
        );
    }
    drop(named);
    let any = start_server(&reg, &["--allowed-hosts", "*"], false);
    assert_eq!(raw(&any, "GET", "/", &[("Host", "evil.example")], b"").status, 200);
    drop(any);
    let bad = reg.run(&["server", "--port", "0", "--allowed-hosts", "http://x/"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a host"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn serve_refuses_rebinding_and_cross_site_scoring() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production"]);
    let s = reg.spawn(&["serve", "-m", "models:/iris/Production"]);
    let start = Instant::now();
    while raw(&s, "GET", "/v2/models/iris/ready", &[], b"").status != 200 {
        assert!(start.elapsed() < Duration::from_secs(60), "not ready; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = json!({"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "data": [[5.1, 3.5, 1.4, 0.2]]}}).to_string();
    let ct = ("Content-Type", "application/json");
    assert_eq!(raw(&s, "POST", "/invocations", &[ct], body.as_bytes()).status, 200);

    let evil = ("Host", "evil.example");
    for path in ["/", "/metrics", "/v2/models/iris", "/v2"] {
        assert_eq!(raw(&s, "GET", path, &[evil], b"").status, 403, "{path}");
    }
    for path in ["/ping", "/health", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(raw(&s, "GET", path, &[evil], b"").status, 200, "{path}");
    }
    assert_eq!(raw(&s, "POST", "/invocations", &[evil, ct], body.as_bytes()).status, 403);
    let csv = "5.1,3.5,1.4,0.2";
    for origin in ["http://evil.example", "null"] {
        let r = raw(&s, "POST", "/invocations", &[("Content-Type", "text/csv"), ("Origin", origin)], csv.as_bytes());
        assert_eq!(r.status, 403, "{origin}");
        let r = raw(&s, "POST", "/v2/models/iris/infer", &[ct, ("Origin", origin)], b"{}");
        assert_eq!(r.status, 403, "{origin}");
    }
    assert_eq!(raw(&s, "POST", "/invocations", &[ct, ("Origin", &s.base.clone())], body.as_bytes()).status, 200);
}

/// Log in through the form as a browser on this server's page would; the session cookie.
fn login(s: &Server) -> String {
    let r = raw(
        s,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Origin", &s.base.clone())],
        format!("token={TOKEN}&next=%2F").as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let set =
        r.set_cookies().into_iter().find(|c| c.starts_with("regserve_token=")).expect("a session cookie").to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="), "{set}");
    set.split(';').next().unwrap().to_string()
}

/// A UI form post from this server's page with `cookie`; true if it created `name`.
fn ui_create(s: &Server, cookie: &str, name: &str) -> Resp {
    raw(
        s,
        "POST",
        "/models",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Origin", &s.base.clone()), ("Cookie", cookie)],
        format!("name={name}").as_bytes(),
    )
}

#[test]
fn the_ui_session_is_signed_expiring_and_not_taken_by_the_api() {
    let reg = Registry::new();
    let s = start_server(&reg, &["--auth-reads", "--ui-session-ttl", "3s"], true);
    let issued = Instant::now();
    let cookie = login(&s);
    assert!(!cookie.contains(TOKEN), "the cookie holds a session, not the token: {cookie}");
    assert_eq!(raw(&s, "GET", "/", &[("Cookie", &cookie)], b"").status, 200);
    let r = ui_create(&s, &cookie, "ui1");
    assert_eq!((r.status, r.header("location")), (303, Some("/models/ui1")), "{}", r.body);

    // The API takes the bearer token, never the cookie (no page of ours calls the API).
    let r = json_post(
        &s,
        "registered-models/create",
        json!({"name": "api1"}),
        &[("Cookie", &cookie), ("Origin", &s.base.clone())],
    );
    assert_eq!((r.status, r.json()["error_code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let r = raw(&s, "GET", &format!("{API}/registered-models/get?name=ui1"), &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 401, "--auth-reads: the cookie does not read the API either");
    let bearer = format!("Bearer {TOKEN}");
    let r = raw(&s, "GET", &format!("{API}/registered-models/get?name=ui1"), &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 200);

    // Forged, altered, foreign and old-style (raw token) cookies are not a session.
    let value = cookie.split_once('=').unwrap().1.to_string();
    let mut flipped = value.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let parts: Vec<&str> = value.split('.').collect();
    let extended = format!("v1.{}.{}.{}", parts[1].parse::<u64>().unwrap() + 86_400, parts[2], parts[3]);
    let other = start_server(&reg, &["--ui-session-ttl", "3s"], true);
    let foreign = login(&other);
    drop(other);
    for bad in [
        format!("regserve_token={}", String::from_utf8(flipped).unwrap()),
        format!("regserve_token={extended}"),
        foreign,
        format!("regserve_token={TOKEN}"),
        "regserve_token=".to_string(),
    ] {
        let page = raw(&s, "GET", "/models/ui1", &[("Cookie", &bad)], b"");
        assert_eq!(page.status, 303, "{bad}");
        assert!(page.header("location").unwrap().starts_with("/login?why=read"), "{bad}");
        let r = ui_create(&s, &bad, "forged");
        assert_eq!(r.status, 303, "{bad}");
        assert!(r.header("location").unwrap().starts_with("/login?why=write"), "{bad}");
        assert!(!raw(
            &s,
            "GET",
            &format!("{API}/registered-models/get?name=forged"),
            &[("Authorization", &bearer)],
            b""
        )
        .body
        .contains("\"forged\""));
    }

    // GET /logout (an <img> on any page) logs nobody out; a cross-site POST neither.
    let r = raw(&s, "GET", "/logout", &[("Cookie", &cookie)], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    assert!(r.set_cookies().iter().all(|c| !c.starts_with("regserve_token")), "{:?}", r.set_cookies());
    let r = raw(
        &s,
        "POST",
        "/logout",
        &[
            ("Cookie", &cookie),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"",
    );
    assert_eq!(r.status, 403);
    assert!(r.set_cookies().iter().all(|c| !c.starts_with("regserve_token")));
    let login_page = raw(&s, "GET", "/login", &[("Cookie", &cookie)], b"");
    assert!(login_page.body.contains("You are logged in.") && login_page.body.contains("action=\"/logout\""));
    assert_eq!(ui_create(&s, &cookie, "ui2").status, 303);
    assert!(
        raw(&s, "GET", &format!("{API}/registered-models/get?name=ui2"), &[("Authorization", &bearer)], b"").status
            == 200
    );

    // The session expires (3 s; the check has one-second resolution).
    let wait = Duration::from_secs(4).saturating_sub(issued.elapsed());
    std::thread::sleep(wait + Duration::from_millis(200));
    let r = ui_create(&s, &cookie, "late");
    assert!(r.header("location").unwrap_or("").starts_with("/login?why=write"), "expired session still writes");
    assert_eq!(raw(&s, "GET", "/", &[("Cookie", &cookie)], b"").status, 303);

    // Logging out is a same-origin POST that clears the cookie.
    let fresh = login(&s);
    let r = raw(
        &s,
        "POST",
        "/logout",
        &[("Cookie", &fresh), ("Origin", &s.base.clone()), ("Content-Type", "application/x-www-form-urlencoded")],
        b"",
    );
    assert_eq!(r.status, 303);
    assert!(r.set_cookies().iter().any(|c| c.starts_with("regserve_token=;") && c.contains("Max-Age=0")));
    assert!(!s.log().contains(TOKEN), "the token is never logged");
}
