//! End to end: the web UI of the real `regserve server` (and the status page of `serve`) on
//! 127.0.0.1:0, driven like a browser without JavaScript — GET pages, POST forms with an
//! `Origin`, follow the 303 with the flash cookie. HTML escaping of names and tags, Markdown
//! sanitizing, forms writing through the registry (checked over the REST API), search pages,
//! the login cookie and the redirects to `/login`, cross-site posts refused.

mod common;

use std::time::Duration;

use common::{Registry, Server};
use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const API: &str = "/api/2.0/mlflow";
const TOKEN: &str = "ui-t0ken with spaces;and=signs";

const XSS: &str = "## Notes\n\n**bold** text\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n\
                   [click me](javascript:alert(1))\n\n<a href=\"JAVASCRIPT:alert(1)\">raw link</a>\n";

/// A browser without JavaScript: no automatic redirects, cookies carried by hand.
struct Browser {
    client: Client,
    base: String,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }
}

impl Browser {
    fn new(server: &Server) -> Browser {
        let client = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { client, base: server.base.clone(), cookies: Vec::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// Keep or drop cookies as a browser would from `Set-Cookie`.
    fn absorb(&mut self, page: &Page) {
        for c in page.set_cookies() {
            let (kv, attrs) = c.split_once(';').unwrap_or((&c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !attrs.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let resp = req.header("Cookie", self.cookie_header()).send().await.expect("request");
        let page = Page { status: resp.status(), headers: resp.headers().clone(), body: resp.text().await.unwrap() };
        self.absorb(&page);
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// Post a form from a page of this server (`Origin` set, as a browser sets it).
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_from(path, form, &self.base.clone()).await
    }

    async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: &str) -> Page {
        let req = self.client.post(format!("{}{path}", self.base)).header("Origin", origin).form(form);
        self.send(req).await
    }

    /// Post, expect a 303, follow it: the page with its flash message.
    async fn submit(&mut self, path: &str, form: &[(&str, &str)]) -> (String, Page) {
        let resp = self.post(path, form).await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "POST {path}: {}", resp.body);
        let to = resp.location().to_string();
        let page = self.get(&to).await;
        (to, page)
    }
}

async fn api(server: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Client::new().request(method, server.url(&format!("{API}/{path}")));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn get_version(server: &Server, name: &str, version: u64) -> (StatusCode, Value) {
    let q = format!("model-versions/get?name={}&version={version}", urlencode(name));
    api(server, reqwest::Method::GET, &q, None).await
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A version whose files are elsewhere (not test-loaded, no signature to show).
async fn remote_version(server: &Server, name: &str) -> u64 {
    let body = json!({"name": name, "source": "s3://bucket/models/iris"});
    let (status, v) = api(server, reqwest::Method::POST, "model-versions/create", Some(body)).await;
    assert_eq!(status, 200, "{v}");
    v["model_version"]["version"].as_str().unwrap().parse().unwrap()
}

fn assert_inert(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in ["<script", "onerror", "javascript:"] {
        assert!(!lower.contains(bad), "{bad} survived in:\n{html}");
    }
}

#[tokio::test]
async fn names_and_tags_are_escaped_and_descriptions_sanitized() {
    let reg = Registry::new();
    let server = reg.spawn(&["server"]);
    let mut b = Browser::new(&server);
    let name = "we<ird> & \"quoted\" 'model'";

    let (to, page) = b.submit("/models", &[("name", name), ("description", XSS)]).await;
    assert_eq!(to, "/models/we%3Cird%3E%20%26%20%22quoted%22%20%27model%27");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<h1>we&lt;ird&gt; &amp; &quot;quoted&quot; 'model'</h1>"), "{}", page.body);
    assert!(!page.body.contains("<ird>"));
    // Markdown renders; the active content does not survive.
    let rendered = page.body.split("class=\"markdown\"").nth(1).unwrap().split("</div>").next().unwrap();
    assert!(rendered.contains("<h2>Notes</h2>") && rendered.contains("<strong>bold</strong>"), "{rendered}");
    assert!(rendered.contains("click me") && rendered.contains("raw link"), "{rendered}");
    assert_inert(rendered);
    // The edit form holds the source, escaped.
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    let tag = [("key", "<script>k</script>"), ("value", "<img src=x onerror=alert(2)>")];
    let (_, page) = b.submit(&format!("{to}/tags"), &tag).await;
    assert!(page.body.contains("&lt;script&gt;k&lt;/script&gt;"), "{}", page.body);
    assert!(page.body.contains("&lt;img src=x onerror=alert(2)&gt;"));
    assert!(page.body.contains("Set tag '&lt;script&gt;k&lt;/script&gt;'."), "the flash is escaped too");

    let v = remote_version(&server, name).await;
    let vurl = format!("{to}/versions/{v}");
    let (_, page) = b.submit(&format!("{vurl}/tags"), &tag).await;
    assert!(page.body.contains("&lt;script&gt;k&lt;/script&gt;") && page.body.contains("onerror=alert(2)&gt;"));
    let (_, page) = b.submit(&format!("{vurl}/description"), &[("description", XSS)]).await;
    let rendered = page.body.split("class=\"markdown\"").nth(1).unwrap().split("</div>").next().unwrap();
    assert!(rendered.contains("<strong>bold</strong>"));
    assert_inert(rendered);
    let (_, page) = b.submit(&format!("{to}/aliases"), &[("alias", "a<b>"), ("version", &v.to_string())]).await;
    assert!(!page.body.contains("a<b>"), "{}", page.body);

    // Everywhere the name shows.
    let list = b.get("/").await;
    assert!(list.body.contains("we&lt;ird&gt; &amp; &quot;quoted&quot;"));
    assert!(!list.body.contains("<ird>") && !list.body.contains("<script>k"));
    let page = b.get(&vurl).await;
    assert!(page.body.contains("we&lt;ird&gt;") && !page.body.contains("<ird>"));
    assert!(page.body.contains("Not available"), "a version stored elsewhere has no signature to show");

    // Pages are sent with a policy that runs no script at all, and never framed.
    let csp = page.headers.get(CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
}

#[tokio::test]
async fn forms_write_through_the_registry_and_show_its_errors() {
    let reg = Registry::new();
    let server = reg.spawn(&["server"]);
    let mut b = Browser::new(&server);

    let (to, page) = b.submit("/models", &[("name", "iris"), ("description", "First *iris*")]).await;
    assert_eq!(to, "/models/iris");
    assert!(page.body.contains("Created registered model 'iris'."), "{}", page.body);
    assert!(page.set_cookies().iter().any(|c| c.starts_with("regserve_flash=;") && c.contains("Max-Age=0")));
    assert!(!b.get("/models/iris").await.body.contains("Created registered model"), "a flash shows once");

    // The registry's own message, on the page, not a JSON body.
    let (to, page) = b.submit("/models", &[("name", "iris")]).await;
    assert_eq!(to, "/#create");
    assert!(page.body.contains("Registered Model (name=iris) already exists."), "{}", page.body);
    assert!(page.headers.get(CONTENT_TYPE).unwrap().to_str().unwrap().starts_with("text/html"));
    let (_, page) = b.submit("/models", &[("name", "  ")]).await;
    assert!(page.body.contains("Registered model name cannot be empty."), "{}", page.body);

    let v1 = remote_version(&server, "iris").await;
    let v2 = remote_version(&server, "iris").await;
    let (_, page) = b.submit(&format!("/models/iris/versions/{v1}/stage"), &[("stage", "Production")]).await;
    assert!(page.body.contains("Version 1 is now in Production."), "{}", page.body);
    let form = [("stage", "Production"), ("archive_existing", "true")];
    let (to, page) = b.submit(&format!("/models/iris/versions/{v2}/stage"), &form).await;
    assert_eq!(to, "/models/iris/versions/2");
    assert!(page.body.contains("the other versions there are now Archived"), "{}", page.body);
    assert_eq!(get_version(&server, "iris", v2).await.1["model_version"]["current_stage"], "Production");
    assert_eq!(get_version(&server, "iris", v1).await.1["model_version"]["current_stage"], "Archived");
    let (_, page) = b.submit(&format!("/models/iris/versions/{v1}/stage"), &[("stage", "Gold")]).await;
    assert!(page.body.contains("Invalid Model Version stage: Gold."), "{}", page.body);

    let (_, page) = b.submit("/models/iris/aliases", &[("alias", "champion"), ("version", "2")]).await;
    assert!(page.body.contains("'@champion' now points at version 2."), "{}", page.body);
    let (s, v) = api(&server, reqwest::Method::GET, "registered-models/alias?name=iris&alias=champion", None).await;
    assert_eq!((s.as_u16(), &v["model_version"]["version"]), (200, &json!("2")));
    let (_, page) = b.submit("/models/iris/aliases", &[("alias", "ghost"), ("version", "9")]).await;
    assert!(page.body.contains("Model Version (name=iris, version=9) not found"), "{}", page.body);
    let (_, page) = b.submit("/models/iris/aliases", &[("alias", "x"), ("version", "two")]).await;
    assert!(page.body.contains("Version must be a number"), "{}", page.body);
    b.submit("/models/iris/aliases/delete", &[("alias", "champion")]).await;
    let (s, _) = api(&server, reqwest::Method::GET, "registered-models/alias?name=iris&alias=champion", None).await;
    assert_eq!(s, 400);

    b.submit("/models/iris/tags", &[("key", "team"), ("value", "botany")]).await;
    b.submit("/models/iris/versions/2/tags", &[("key", "validated"), ("value", "yes")]).await;
    b.submit("/models/iris/versions/2/description", &[("description", "v2 notes")]).await;
    let mv = get_version(&server, "iris", 2).await.1;
    assert_eq!(mv["model_version"]["tags"], json!([{"key": "validated", "value": "yes"}]));
    assert_eq!(mv["model_version"]["description"], "v2 notes");
    b.submit("/models/iris/versions/2/tags/delete", &[("key", "validated")]).await;
    assert!(get_version(&server, "iris", 2).await.1["model_version"].get("tags").is_none());
    let (_, page) = b.submit("/models/iris/tags/delete", &[("key", "nope")]).await;
    assert!(page.body.contains("No tag with name: nope"), "{}", page.body);
    let (_, page) = b.submit("/models/iris/description", &[("description", "# New\n\nText")]).await;
    assert!(page.body.contains("<h1>New</h1>"));

    // Deletes: a confirm page (works without script) posting the delete.
    let confirm = b.get("/models/iris/versions/1/delete").await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("method=\"post\" action=\"/models/iris/versions/1/delete\""), "{}", confirm.body);
    let (to, _) = b.submit("/models/iris/versions/1/delete", &[]).await;
    assert_eq!(to, "/models/iris");
    assert_eq!(get_version(&server, "iris", 1).await.0, 404);

    let (to, page) = b.submit("/models/iris/rename", &[("new_name", "iris-renamed")]).await;
    assert_eq!(to, "/models/iris-renamed");
    assert!(page.body.contains("Renamed 'iris' to 'iris-renamed'."));
    let confirm = b.get("/models/iris-renamed/delete").await;
    assert!(confirm.body.contains("1 version</strong>"), "{}", confirm.body);
    let (to, page) = b.submit("/models/iris-renamed/delete", &[]).await;
    assert_eq!(to, "/");
    assert!(page.body.contains("Deleted registered model 'iris-renamed'."));
    let (s, _) = api(&server, reqwest::Method::GET, "registered-models/get?name=iris-renamed", None).await;
    assert_eq!(s, 404);

    // Missing things are HTML pages with the registry's message.
    let page = b.get("/models/nope").await;
    assert_eq!(page.status, 404);
    assert!(page.body.contains("Registered Model with name=nope not found"), "{}", page.body);
    assert_eq!(b.get("/models/nope/versions/x").await.status, 404);
}

#[tokio::test]
async fn search_filters_and_pages_with_keyset_tokens() {
    let reg = Registry::new();
    let server = reg.spawn(&["server"]);
    for i in 0..30 {
        let body = json!({"name": format!("model-{i:02}"), "tags": [{"key": "team", "value": if i % 2 == 0 {"even"} else {"odd"}}]});
        let (s, v) = api(&server, reqwest::Method::POST, "registered-models/create", Some(body)).await;
        assert_eq!(s, 200, "{v}");
    }
    let mut b = Browser::new(&server);
    let first = b.get("/").await;
    assert_eq!(first.body.matches("href=\"/models/model-").count(), 25);
    let next = first.body.split("href=\"").find(|s| s.starts_with("/?page_token=")).expect("a Next page link");
    let next = next.split('"').next().unwrap().replace("&amp;", "&");
    let second = b.get(&next).await;
    assert_eq!(second.body.matches("href=\"/models/model-").count(), 5, "{}", second.body);
    assert!(second.body.contains("model-29") && !second.body.contains("model-24\""));
    assert!(!second.body.contains("Next page"));

    let filtered = b.get("/?filter=tags.team%20%3D%20%27odd%27%20AND%20name%20LIKE%20%27model-1%25%27").await;
    let names: Vec<&str> =
        filtered.body.split("href=\"/models/").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert_eq!(names, ["model-11", "model-13", "model-15", "model-17", "model-19"]);
    assert!(filtered.body.contains("value=\"tags.team = 'odd' AND name LIKE 'model-1%'\""), "the box keeps the filter");

    let small = b.get("/?filter=name%20LIKE%20%27model-0%25%27&per_page=4").await;
    let link = small.body.split("href=\"").find(|s| s.starts_with("/?filter=")).unwrap().split('"').next().unwrap();
    assert!(link.contains("per_page=4") && link.contains("page_token="), "{link}");

    let bad = b.get("/?filter=bogus%20filter").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("class=\"flash error\""), "{}", bad.body);
}

#[tokio::test]
async fn the_version_page_shows_the_signature_and_example_of_local_files() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production", "--alias", "champion", "--tag", "owner=ana"]);
    let server = reg.spawn(&["server"]);
    let mut b = Browser::new(&server);
    let page = b.get("/models/iris/versions/1").await;
    assert_eq!(page.status, 200);
    for expected in
        ["sepal_length", "petal_width", "probabilities", "tensor&lt;float32&gt;", "[-1,3]", "@champion", "owner", "ana"]
    {
        assert!(page.body.contains(expected), "{expected} missing:\n{}", page.body);
    }
    let example = page.body.split("<pre class=\"example\">").nth(1).expect("an input example").split("</pre>").next();
    assert!(example.unwrap().contains("&quot;columns&quot;"), "{example:?}");
    assert!(page.body.contains("mlflow-artifacts:/registry/"), "the download URI");
    assert!(page.body.contains("<option value=\"Production\" selected>"), "the drop-down shows the stage");
    let model = b.get("/models/iris").await;
    assert!(model.body.contains("stage-production") && model.body.contains("Version 1"));
}

#[tokio::test]
async fn writes_need_the_token_and_the_login_cookie_carries_it() {
    let reg = Registry::new();
    let mut cmd = reg.cmd();
    cmd.args(["server", "--host", "127.0.0.1", "--port", "0"])
        .env("REGSERVE_AUTH_TOKEN", TOKEN)
        .env("RUST_LOG", "info");
    let server = Server::start(cmd);
    let mut b = Browser::new(&server);

    let list = b.get("/").await;
    assert_eq!(list.status, 200, "reads are open");
    assert!(list.body.contains("Log in"));
    let req = b
        .client
        .post(server.url("/models"))
        .header("Origin", &server.base)
        .header("Referer", server.url("/models/x?y=1"));
    let refused = b.send(req.form(&[("name", "m")])).await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert_eq!(refused.location(), "/login?why=write&next=%2Fmodels%2Fx%3Fy%3D1");
    let login = b.get(refused.location()).await;
    assert!(login.body.contains("Log in to make changes"), "{}", login.body);
    assert!(login.body.contains("name=\"next\" value=\"/models/x?y=1\""));

    let wrong = b.post("/login", &[("token", "nope"), ("next", "/")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("That is not the server's token."));
    assert!(b.cookies.iter().all(|(k, _)| k != "regserve_token"));
    let from_elsewhere = b.post_from("/login", &[("token", TOKEN)], "http://evil.example").await;
    assert_eq!(from_elsewhere.status, 403);

    let ok = b.post("/login", &[("token", TOKEN), ("next", "https://evil.example/")]).await;
    assert_eq!((ok.status, ok.location()), (StatusCode::SEE_OTHER, "/"));
    let cookie = ok.set_cookies().into_iter().find(|c| c.starts_with("regserve_token=")).expect("the token cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    assert!(b.get("/").await.body.contains("Log out"));
    let (to, page) = b.submit("/models", &[("name", "m")]).await;
    assert_eq!(to, "/models/m");
    assert!(page.body.contains("Created registered model 'm'."));

    // Cross-site posts are refused even with the cookie.
    let csrf = b.post_from("/models/m/delete", &[], "http://evil.example").await;
    assert_eq!(csrf.status, 403);
    let (s, _) = api(&server, reqwest::Method::GET, "registered-models/get?name=m", None).await;
    assert_eq!(s, 200);

    // The API still answers 401 in JSON; the stylesheet is open.
    let (s, v) = api(&server, reqwest::Method::POST, "registered-models/create", Some(json!({"name": "x"}))).await;
    assert_eq!((s.as_u16(), v["error_code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let css = Client::new().get(server.url("/static/style.css")).send().await.unwrap();
    assert_eq!(css.headers().get(CONTENT_TYPE).unwrap(), "text/css; charset=utf-8");

    let out = b.post("/logout", &[]).await;
    assert!(out.set_cookies().iter().any(|c| c.starts_with("regserve_token=;") && c.contains("Max-Age=0")));
    b.absorb(&out);
    assert_eq!(b.post("/models", &[("name", "m2")]).await.status, StatusCode::SEE_OTHER);
    let (s, _) = api(&server, reqwest::Method::GET, "registered-models/get?name=m2", None).await;
    assert_eq!(s, 404, "logged out: the post went to the login page");
}

#[tokio::test]
async fn with_auth_reads_pages_send_the_browser_to_login() {
    let reg = Registry::new();
    let mut cmd = reg.cmd();
    cmd.args(["server", "--host", "127.0.0.1", "--port", "0", "--auth-reads"])
        .env("REGSERVE_AUTH_TOKEN", TOKEN)
        .env("RUST_LOG", "info");
    let server = Server::start(cmd);
    let mut b = Browser::new(&server);
    let page = b.get("/models/iris?x=1").await;
    assert_eq!(
        (page.status, page.location()),
        (StatusCode::SEE_OTHER, "/login?why=read&next=%2Fmodels%2Firis%3Fx%3D1")
    );
    let login = b.get(page.location()).await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("needs its token to be read"));
    assert_eq!(b.get("/static/style.css").await.status, 200);
    let (s, _) = api(&server, reqwest::Method::GET, "registered-models/search", None).await;
    assert_eq!(s, 401);
    let ok = b.post("/login", &[("token", TOKEN), ("next", "/")]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let list = b.get("/").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("Logged in.") && list.body.contains("Registered models"));
}

#[tokio::test]
async fn the_serve_status_page_shows_versions_and_requests() {
    let reg = Registry::new();
    reg.register("iris-v1", "iris", &["--stage", "Production", "--alias", "champion"]);
    let serve = reg.spawn(&["serve", "-m", "models:/iris/Production", "--poll-interval", "1s"]);
    serve.wait_ready("/ping", Duration::from_secs(30)).await;
    let c = Client::new();
    for _ in 0..3 {
        let r =
            c.post(serve.url("/invocations")).json(&json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let bad = c.post(serve.url("/invocations")).json(&json!({"nope": 1})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let resp = c.get(serve.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(CONTENT_SECURITY_POLICY).is_some());
    let body = resp.text().await.unwrap();
    for expected in [
        "models:/iris/Production",
        "data-version=\"1\"",
        "stage-production",
        "@champion",
        "data-requests=\"4\"",
        "1 4xx",
        "http-equiv=\"refresh\"",
        "p50",
    ] {
        assert!(body.contains(expected), "{expected} missing:\n{body}");
    }
    let health: Value = serve.health_json().await;
    assert_eq!(health["models"][0]["requests"]["total"], 4);
    assert_eq!(health["models"][0]["requests"]["client_errors"], 1);
    let css = c.get(serve.url("/static/style.css")).send().await.unwrap();
    assert_eq!(css.status(), 200);
}

#[tokio::test]
async fn the_model_list_leaves_prompts_out() {
    // MLflow's prompt registry stores prompts as registered models tagged
    // `mlflow.prompt.is_prompt = true`; the model list shows models only, as MLflow's UI does.
    let reg = Registry::new();
    let server = reg.spawn(&["server"]);
    let mut b = Browser::new(&server);
    for (name, tags) in [
        ("a-model", json!([])),
        ("b-prompt", json!([{"key": "mlflow.prompt.is_prompt", "value": "true"}])),
        ("tagged-false", json!([{"key": "mlflow.prompt.is_prompt", "value": "false"}])),
    ] {
        let (status, v) =
            api(&server, reqwest::Method::POST, "registered-models/create", Some(json!({"name": name, "tags": tags})))
                .await;
        assert_eq!(status, 200, "{v}");
    }
    let list = b.get("/").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("a-model") && list.body.contains("tagged-false"), "{}", list.body);
    assert!(!list.body.contains("b-prompt"), "{}", list.body);
    // With a filter of the user's too.
    let list = b.get("/?filter=name%20LIKE%20%27%25-%25%27").await;
    assert!(list.body.contains("a-model") && !list.body.contains("b-prompt"), "{}", list.body);
}
