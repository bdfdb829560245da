"""A live local search as a newcomer sees it: loopback-only sockets, token authentication on, the dashboard in a
real browser with the token typed into its dialog, and the token never written anywhere."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest
from conftest import REPO, checkpointed, trial_dir, write_spec

pytestmark = pytest.mark.slow

DASHBOARD = "http://127.0.0.1:8265"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """`run_search.py` in its own process with a private HOME (so its own Ray token), mid-search."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("live")
    home = tmp / "home"
    home.mkdir()
    spec = write_spec(tmp, """
fixed: {optimizer: adam, lr: 1.0e-3}
variants:
  - {name: short, epochs: 2, baseline: true}
  - {name: long, epochs: 60}
""", name="live")
    env = {**os.environ, "HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "run_search.py"), str(spec), "--profile", "smoke",
                             "--storage", str(tmp / "results"), "--no-report"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=REPO, start_new_session=True)
    exp_dir = tmp / "results" / "live"
    deadline = time.monotonic() + 240
    while not (trial_dir(exp_dir, "long") and checkpointed(trial_dir(exp_dir, "long")) >= 2):
        assert proc.poll() is None, (tmp / "driver.log").read_text()
        assert time.monotonic() < deadline, "the search did not get going"
        time.sleep(0.5)
    yield {"proc": proc, "home": home, "env": env, "exp_dir": exp_dir, "log": tmp / "driver.log"}
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def _token(live) -> str:
    out = subprocess.run([shutil.which("ray") or "ray", "get-auth-token"], env=live["env"], capture_output=True,
                         text=True, timeout=60)
    token = out.stdout.strip()
    assert len(token) >= 16, out.stderr
    return token


def _listening(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of `pid` and its descendants."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    pids = {p.pid: p.name() for p in procs if p.is_running()}
    return [(pids[c.pid], c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def test_every_ray_socket_of_a_local_search_listens_on_loopback_only(live):
    sockets = _listening(live["proc"].pid)
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the check covers Ray's own services
    assert any(port == 8265 for _, _, port in sockets)  # and the dashboard
    exposed = [s for s in sockets if not _loopback(s[1])]
    assert exposed == [], f"listening beyond loopback: {exposed}"


def test_token_authentication_is_on_and_the_first_lines_say_how_to_pass_it(live):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{DASHBOARD}/api/version", timeout=10)
    assert refused.value.code in (401, 403)
    request = urllib.request.Request(f"{DASHBOARD}/api/version", headers={"Authorization": f"Bearer {_token(live)}"})
    assert urllib.request.urlopen(request, timeout=10).status == 200
    head = live["log"].read_text()
    assert "Ray dashboard: http://127.0.0.1:8265 - token authentication is on: paste the output of " \
           "`ray get-auth-token` into its dialog" in head


def test_dashboard_in_chromium_with_the_token_typed_into_its_dialog(live, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                 "--disable-background-networking", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    try:
        browser.get(f"{DASHBOARD}/#/cluster")
        wait = WebDriverWait(browser, 60)
        field = wait.until(ec.element_to_be_clickable(
            (By.CSS_SELECTOR, "input[placeholder='Enter your authentication token']")))
        field.send_keys(_token(live))
        browser.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()
        wait.until(ec.invisibility_of_element_located((By.XPATH, "//*[text()='Authentication Token Required']")))
        wait.until(lambda b: "127.0.0.1" in b.find_element(By.TAG_NAME, "body").text)  # the node's row
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Authentication Token Required" not in body and "ALIVE" in body.upper()
        browser.save_screenshot(str(tmp_path / "dashboard.png"))
        if os.environ.get("MTL_TUNE_DOCS_SCREENSHOT"):  # regenerate docs/dashboard.png on purpose only
            shutil.copy(tmp_path / "dashboard.png", REPO / "docs" / "dashboard.png")
    finally:
        browser.quit()


def test_the_token_is_never_written_by_the_search(live):
    token = _token(live)
    proc = live["proc"]
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: state saved, results written
    assert proc.wait(timeout=120) == 130
    files = [p for p in live["exp_dir"].rglob("*") if p.is_file()] + [live["log"]]
    assert len(files) > 10
    leaks = [str(p) for p in files if token.encode() in p.read_bytes()]
    assert leaks == []
