//! The evidence HTML page in a real headless Chromium (Debian's, installed by
//! `scripts/chromium.sh`; the test fails, never skips, when it cannot be installed): the page
//! loads from a file with no network, every path of the JSON is on it (in the diagram and in
//! the table), nothing is cut off at 1280 and 390 px, violations are drawn in red, and a
//! screenshot is written for people to look at (its path is printed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn chromium() -> PathBuf {
    let output = Command::new("bash")
        .arg(repo("scripts/chromium.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "scripts/chromium.sh could not provide chromium: the HTML test needs it"
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sovereign-evidence-html-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn evidence(paths: &[PathBuf], format: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sovereign-operator"));
    command.arg("evidence");
    for path in paths {
        command.arg("-f").arg(path);
    }
    let output = command
        .args(["--format", format])
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Runs Chromium headless on `page` with `args` and returns stdout. A fresh profile, and every
/// background service off: on a closed network Chromium otherwise waits for them. The watchdog
/// only keeps a hung browser from hanging the suite.
fn run_chromium(browser: &Path, dir: &Path, args: &[String], page: &Path) -> String {
    let run = dir_count(dir);
    let profile = dir.join(format!("profile-{run}"));
    // To a file, not a pipe: a page's DOM is larger than a pipe holds, and a full pipe would
    // block Chromium while this waits for it.
    let stdout_path = dir.join(format!("stdout-{run}.txt"));
    let stdout = std::fs::File::create(&stdout_path).expect("stdout file");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Any fetch would fail: the page must need none.
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("chromium did not finish on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::read_to_string(&stdout_path).expect("chromium's output")
}

fn dir_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Test-only: a script appended to a copy of the page writes what the layout looks like into
/// the DOM, which `--dump-dom` prints.
const MEASURE: &str = r#"<script>
(function () {
  var out = {innerWidth: innerWidth, scrollWidth: document.documentElement.scrollWidth,
             clientWidth: document.documentElement.clientWidth, paths: [], cut: []};
  document.querySelectorAll('[data-flow]').forEach(function (e) {
    var r = e.getBoundingClientRect();
    var region = e.closest('[data-region]');
    out.paths.push({region: region ? region.getAttribute('data-region') : null,
      flow: e.getAttribute('data-flow'), from: e.getAttribute('data-from'),
      to: e.getAttribute('data-to'), status: e.getAttribute('data-status'),
      tag: e.tagName, visible: r.width > 0 && r.height > 0, text: e.innerText});
  });
  document.querySelectorAll('body *').forEach(function (e) {
    var r = e.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return;
    var name = e.tagName + '.' + e.className;
    if (r.right > innerWidth + 1 || r.left < -1)
      out.cut.push(name + ' spans ' + Math.round(r.left) + '..' + Math.round(r.right));
    if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
      out.cut.push(name + ' scrolls ' + e.scrollWidth + ' > ' + e.clientWidth);
  });
  var box = document.querySelector('.edge.violation .box');
  var badge = document.querySelector('.status.violation');
  out.violationBox = box ? getComputedStyle(box).backgroundColor + ' ' + getComputedStyle(box).borderTopColor : null;
  out.violationBadge = badge ? getComputedStyle(badge).backgroundColor : null;
  var pre = document.createElement('pre');
  pre.id = 'measurements';
  pre.textContent = JSON.stringify(out);
  (window.parent !== window ? window.parent.document.body : document.body).appendChild(pre);
})();
</script>"#;

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Loads `html` in a viewport `width` px wide and returns the measurements. Headless Chromium
/// will not make its window narrower than 500 px, so the page is loaded into an iframe of that
/// width (a `srcdoc` frame: same origin, so the script in it can report to the parent).
fn measure(browser: &Path, dir: &Path, html: &str, width: u32) -> Value {
    let page = dir.join(format!("measure-{width}.html"));
    let framed = html.replace("</body>", &format!("{MEASURE}\n</body>"));
    let wrapper = format!(
        "<!DOCTYPE html><html><body style=\"margin:0\"><iframe style=\"width:{width}px;height:2000px;border:0\" srcdoc=\"{}\"></iframe></body></html>",
        framed.replace('&', "&amp;").replace('"', "&quot;")
    );
    std::fs::write(&page, wrapper).expect("write");
    let dom = run_chromium(
        browser,
        dir,
        &[
            "--window-size=1400,2100".to_owned(),
            "--dump-dom".to_owned(),
        ],
        &page,
    );
    let start = dom
        .find("<pre id=\"measurements\">")
        .unwrap_or_else(|| panic!("no measurements at {width} px; the DOM was:\n{dom}"));
    let rest = &dom[start + "<pre id=\"measurements\">".len()..];
    let end = rest.find("</pre>").expect("end of measurements");
    serde_json::from_str(&unescape(&rest[..end])).expect("measurements are JSON")
}

fn json_paths(report: &Value) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for region in report["regions"].as_array().expect("regions") {
        for path in region["paths"].as_array().expect("paths") {
            out.push((
                region["name"].as_str().expect("name").to_owned(),
                path["flow"].as_str().expect("flow").to_owned(),
                path["from"].as_str().expect("from").to_owned(),
                path["to"].as_str().expect("to").to_owned(),
            ));
        }
    }
    out.sort();
    out
}

fn page_paths(measurements: &Value, tag: &str) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = measurements["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .filter(|p| p["tag"] == tag)
        .map(|p| {
            assert_eq!(p["visible"], true, "{p} is not visible");
            let text = p["text"].as_str().unwrap_or_default();
            let to = p["to"].as_str().unwrap_or_default();
            // innerText may break long host names; compare without white space.
            let squash = |s: &str| s.split_whitespace().collect::<String>();
            assert!(
                squash(text).contains(&squash(to)),
                "{to} is not shown: {text}"
            );
            (
                p["region"].as_str().unwrap_or_default().to_owned(),
                p["flow"].as_str().unwrap_or_default().to_owned(),
                p["from"].as_str().unwrap_or_default().to_owned(),
                to.to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_evidence_page_in_chromium_shows_every_path_uncut_and_violations_in_red() {
    let browser = chromium();
    let dir = scratch("eu-india");
    let inputs = vec![
        repo("deploy/examples/eu-india"),
        repo("tests/evidence/data-protection.yaml"),
    ];
    let report: Value = serde_json::from_str(&evidence(&inputs, "json")).expect("json");
    let html = evidence(&inputs, "html");
    for forbidden in ["src=", "href=", "url(", "@import", "<link", "<script"] {
        assert!(
            !html.contains(forbidden),
            "the page must be self-contained: {forbidden}"
        );
    }
    let page = dir.join("eu-india.html");
    std::fs::write(&page, &html).expect("write");
    let expected = json_paths(&report);
    assert!(expected.len() > 40, "{} paths", expected.len());

    for width in [1280, 390] {
        let measured = measure(&browser, &dir, &html, width);
        println!(
            "{width} px: document scrollWidth {} clientWidth {}, {} path elements",
            measured["scrollWidth"],
            measured["clientWidth"],
            measured["paths"].as_array().map_or(0, Vec::len)
        );
        assert_eq!(measured["innerWidth"], width, "the viewport is {width} px");
        assert!(
            measured["scrollWidth"].as_i64() <= measured["clientWidth"].as_i64(),
            "{width} px: the page scrolls sideways: {measured}"
        );
        assert_eq!(
            measured["cut"],
            serde_json::json!([]),
            "{width} px: cut off elements"
        );
        assert_eq!(page_paths(&measured, "TR"), expected, "{width} px: table");
        assert_eq!(
            page_paths(&measured, "DIV"),
            expected,
            "{width} px: diagram"
        );
    }

    // The measurement can fail: an element wider than the viewport is reported.
    let wide = html.replacen("<h1>", "<div style=\"width:2000px\">wide</div><h1>", 1);
    let measured = measure(&browser, &dir, &wide, 390);
    assert_ne!(measured["cut"], serde_json::json!([]), "{measured}");

    let shot = dir.join("eu-india-1280.png");
    run_chromium(
        &browser,
        &dir,
        &[
            "--window-size=1280,2600".to_owned(),
            format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    println!("screenshot: {} ({size} bytes)", shot.display());
    assert!(size > 50_000, "the screenshot is empty ({size} bytes)");

    // The same example with a backend hosted in the US: the violation is unmissable.
    let extra = dir.join("openai-us.yaml");
    std::fs::write(
        &extra,
        "apiVersion: sovereign.ai/v1alpha1\nkind: InferenceBackend\nmetadata: {name: openai-us, namespace: sovereign-eu}\nspec:\n  region: eu\n  modelName: gpt-4.1\n  external: {provider: OpenAICompatible, endpoint: \"https://api.openai.com/v1\", hostingJurisdiction: US, upstreamModel: gpt-4.1, apiKeySecret: {name: k, key: k}}\n  pricing: {currency: EUR, inputPer1MTokens: \"2\", outputPer1MTokens: \"8\"}\n  dataClasses: [public, pii]\n",
    )
    .expect("write");
    let mut with_violation = inputs.clone();
    with_violation.push(extra);
    let html = evidence(&with_violation, "html");
    let measured = measure(&browser, &dir, &html, 1280);
    assert_eq!(
        measured["violationBox"], "rgb(255, 229, 233) rgb(176, 0, 32)",
        "{measured}"
    );
    assert_eq!(measured["violationBadge"], "rgb(176, 0, 32)");
    let violating: Vec<&Value> = measured["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .filter(|p| p["status"] == "violation")
        .collect();
    assert_eq!(violating.len(), 2, "diagram and table: {violating:?}");
    assert!(violating.iter().all(|p| p["to"] == "api.openai.com"));
    let page = dir.join("eu-india-violation.html");
    std::fs::write(&page, &html).expect("write");
    let shot = dir.join("eu-india-violation-1280.png");
    run_chromium(
        &browser,
        &dir,
        &[
            "--window-size=1280,1400".to_owned(),
            format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    println!("screenshot: {}", shot.display());
}
