"""The built documentation site (`python tools/build_docs.py` -> `_docs/`), opened in headless Chromium.

Every page reachable from `_docs/index.html` is loaded from the folder (file://, as a user opens it, and as a
GitHub Pages base path sees relative links): it must have its title and no error text, every image must load,
every internal link (and its #fragment) must resolve, and the search page must find an API entry. Screenshots
go to `_docs/_screenshots/`. Without Chromium or a built site the tests skip; under CI (`CI=true`) they fail.
"""
import base64, json, os, re, shutil, subprocess, tempfile, time, urllib.request
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT/'_docs'
SHOTS = SITE/'_screenshots'
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def _missing(why):
    if IN_CI: pytest.fail(f'{why} (CI=true, so this is a failure, not a skip)')
    pytest.skip(why)


def _chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        if p := shutil.which(name): return p


class Browser:
    "Just enough of the Chrome DevTools Protocol: open a URL, evaluate JS, take a screenshot."
    def __init__(self, exe):
        import websocket
        self.profile = tempfile.mkdtemp(prefix='qlora-nb-chromium-')
        self.proc = subprocess.Popen(
            [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
             f'--user-data-dir={self.profile}', '--remote-debugging-port=0', '--window-size=1280,1600',
             '--allow-file-access-from-files', 'about:blank'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, t = Path(self.profile)/'DevToolsActivePort', time.time()
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() - t > 60 or self.proc.poll() is not None:
                raise RuntimeError(f'chromium did not start (exit code {self.proc.poll()})')
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        req = urllib.request.Request(f'http://127.0.0.1:{port}/json/new?about:blank', method='PUT')
        target = json.load(urllib.request.urlopen(req, timeout=30))
        self.ws = websocket.create_connection(target['webSocketDebuggerUrl'], timeout=60, suppress_origin=True)
        self.n = 0

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({'id': self.n, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self.n:
                if 'error' in msg: raise RuntimeError(f'{method}: {msg["error"]}')
                return msg['result']

    def js(self, expr):
        r = self.call('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r: raise RuntimeError(f'JS error in {expr[:60]}: {r["exceptionDetails"]}')
        return r['result'].get('value')

    def open(self, url, ready='true', timeout=30):
        "Load `url` and wait until the document, its images and `ready` (a JS expression) are done."
        self.call('Page.navigate', url=url)
        t = time.time()
        while not self.js(f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url)}) "
                          f"&& [...document.images].every(i => i.complete) && Boolean({ready})"):
            if time.time() - t > timeout: raise TimeoutError(f'{url} did not finish loading in {timeout} s')
            time.sleep(0.1)

    def screenshot(self, path):
        data = self.call('Page.captureScreenshot', format='png', captureBeyondViewport=False)['data']
        path.write_bytes(base64.b64decode(data))

    def close(self):
        try: self.ws.close()
        finally:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


PAGE_JS = """(() => ({
  title: document.title,
  h1: [...document.querySelectorAll('article h1, main h1')].map(h => h.textContent.replace('¶', '').trim()),
  text: document.body.innerText,
  errors: document.querySelectorAll('.output.error, .output.traceback, .output.stderr, .system-message').length,
  images: [...document.images].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0,
                                          inContent: Boolean(i.closest('article'))})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  search: document.querySelector('form[action*="search"]')?.action ?? null,
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
}))()"""


@pytest.fixture(scope='module')
def site():
    "Crawl the site from index.html: every page reached, its title, text, images, links and ids."
    exe = _chromium()
    if not exe: _missing('chromium is not installed (Debian: apt-get install chromium)')
    if not (SITE/'index.html').exists(): _missing('the site is not built; run `python tools/build_docs.py`')
    try: import websocket  # websocket-client, in the `docs` extra
    except ImportError: _missing('websocket-client is not installed (pip install -e ".[docs]")')
    SHOTS.mkdir(exist_ok=True)
    for old in SHOTS.glob('*.png'): old.unlink()
    b, pages, todo = Browser(exe), {}, [(SITE/'index.html').as_uri()]
    try:
        while todo:
            url = todo.pop(0)
            if url in pages: continue
            b.open(url)
            pages[url] = info = b.js(PAGE_JS)
            b.screenshot(SHOTS/(Path(urlparse(url).path).stem + '.png'))
            for link in info['links']:
                u = urldefrag(link).url
                if u.startswith('file:') and u.endswith('.html') and u not in pages and u not in todo:
                    if Path(unquote(urlparse(u).path)).is_file(): todo.append(u)
        yield pages, b
    finally: b.close()


def _name(url): return Path(unquote(urlparse(url).path)).name


def _notebook_titles():
    "The `# Title` each notebook in nbs/ starts with; every one must be a page of the site."
    titles = {}
    for p in sorted((ROOT/'nbs').glob('*.ipynb')):
        if p.name.startswith(('_', '.')): continue
        for c in json.loads(p.read_text(encoding='utf-8'))['cells']:
            m = re.match(r'#\s+(.+)', ''.join(c['source']).strip()) if c['cell_type'] == 'markdown' else None
            if m: titles[p.name] = m[1].strip(); break
    return titles


def test_every_notebook_is_a_page_with_its_title(site):
    pages, _ = site
    h1s = {h for info in pages.values() for h in info['h1']}
    titles = _notebook_titles()
    assert len(titles) >= 2
    missing = {nb: t for nb, t in titles.items() if t not in h1s}
    assert not missing, f'notebooks without a page (rebuild the site?): {missing}'


def test_pages_render_without_error_text(site):
    pages, _ = site
    assert len(pages) >= len(_notebook_titles())
    bad = []
    for url, info in pages.items():
        if not info['title'].strip() or 'qlora_nb' not in info['title']: bad.append((url, 'no title', info['title']))
        if _name(url) not in ('genindex.html', 'search.html') and len(info['h1']) != 1: bad.append((url, 'h1', info['h1']))
        for needle in ('Traceback (most recent call last)', 'Page not found', 'File not found'):
            if needle in info['text']: bad.append((url, 'error text', needle))
        if re.search(r'(?<![\d.])404(?![\d.])', info['text']): bad.append((url, 'error text', '404'))   # a 404 on its own, not inside a number
        if info['errors']: bad.append((url, 'error outputs or Sphinx system messages', info['errors']))
    assert not bad, bad
    assert {Path(_name(u)).stem + '.png' for u in pages} <= {p.name for p in SHOTS.glob('*.png')}


def test_images_load(site):
    pages, _ = site
    imgs = [(url, i) for url, info in pages.items() for i in info['images']]
    broken = [(_name(url), i['src']) for url, i in imgs if not i['ok']]
    assert not broken, f'images that did not load: {broken}'
    # the loss curve on the front page (README), a file under nbs/images/
    index = next(info for url, info in pages.items() if _name(url) == 'index.html')
    assert any(i['ok'] and 'loss' in i['src'] for i in index['images']), index['images']
    # a notebook that saved an image output shows it on its page
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
        n_png = sum('image/png' in o.get('data', {}) for c in cells for o in c.get('outputs', []))
        if not n_png: continue
        title = _notebook_titles()[nb.name]
        page = next(info for info in pages.values() if title in info['h1'])
        shown = sum(i['ok'] and i['inContent'] for i in page['images'])
        assert shown >= n_png, f'{nb.name} has {n_png} image output(s), its page shows {shown}'


def test_internal_links_resolve(site):
    pages, _ = site
    checked, bad = 0, []
    for url, info in pages.items():
        for link in info['links']:
            if not link.startswith('file:'): continue
            target, frag = urldefrag(link)
            checked += 1
            path = Path(unquote(urlparse(target).path))
            if not path.is_file(): bad.append((_name(url), link, 'no such file')); continue
            if frag and target in pages and unquote(frag) not in pages[target]['ids']:
                bad.append((_name(url), link, 'no such anchor'))
            if not (path.resolve().is_relative_to(SITE.resolve())): bad.append((_name(url), link, 'outside the site'))
    assert not bad, bad
    assert checked >= 2*len(pages), checked  # navigation alone links every page to the others
    print(f'{checked} internal links on {len(pages)} pages resolve')


def test_search_finds_an_api_entry(site):
    "Sphinx's search runs in the page; from file:// it must still find `tokenize_conversation`."
    pages, b = site
    assert (SITE/'search.html').is_file(), 'the site has no search page'
    forms = {info['search'] for info in pages.values()}
    assert forms == {(SITE/'search.html').as_uri()}, f'every page has a search box that opens search.html: {forms}'
    url = (SITE/'search.html').as_uri() + '?q=tokenize_conversation'
    b.open(url, ready="document.querySelector('#search-results .search-summary')?.textContent.length > 0"
                      " || document.querySelectorAll('#search-results li').length > 0", timeout=60)
    hits = b.js("[...document.querySelectorAll('#search-results li a')].map(a => a.href)")
    b.screenshot(SHOTS/'search-results.png')
    assert any(_name(h).startswith('template.html') for h in hits), hits


def test_stderr_shows_as_a_warning_and_errors_stay_errors():
    "What a cell printed to stderr renders as a warning box under it; an exception is still an error output."
    import sys
    sys.path.insert(0, str(ROOT/'tools'))
    from build_docs import convert
    err = {'output_type': 'error', 'ename': 'ValueError', 'evalue': 'bad', 'traceback': ['ValueError: bad']}
    nb = {'metadata': {}, 'cells': [{'cell_type': 'code', 'metadata': {}, 'execution_count': 1, 'source': 'f()', 'outputs': [
          {'output_type': 'stream', 'name': 'stdout', 'text': ['答え\n']},
          {'output_type': 'stream', 'name': 'stderr', 'text': ['UserWarning: *not* markup ``` 注意\n']}, err]}]}
    code, box = convert(nb, {}, '')['cells']
    assert [o['output_type'] for o in code['outputs']] == ['stream', 'error'] and code['outputs'][0]['name'] == 'stdout'
    src = box['source']
    assert box['cell_type'] == 'markdown' and '{admonition} Printed to stderr' in src and ':class: warning' in src
    assert 'UserWarning: *not* markup ``` 注意' in src and src.startswith('`````') and '````text' in src  # fences outrun the text's


def test_no_cell_mixes_imports_with_other_code():
    """nbdev's docs processing runs every cell that imports something (to resolve the names `show_doc` links), so a cell
    that imports and then computes runs there too, out of order: slow cells run, and a name from an earlier cell is
    missing. Imports go in cells of their own (nbdev's FAQ); cells nbdev never runs this way are left alone."""
    import ast
    bad = []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or 'nbdev_export()' in src: continue
            lines = src.splitlines()
            dirs = {l[2:].strip().split(':')[0].split()[0] for l in lines if l.startswith('#|') and l[2:].strip()}
            if dirs & {'export', 'exports', 'exporti', 'exec_doc'} or any(l.replace(' ', '') == '#|eval:false' for l in lines): continue
            try: nodes = list(ast.walk(ast.parse('\n'.join(l for l in lines if not l.startswith(('%', '!', '#|'))))))
            except SyntaxError: continue
            if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes):
                bad.append(f'{nb.name} cell {i}: {lines[0][:60]}')
    assert not bad, 'cells that import and compute (split them: imports in a cell of their own):\n' + '\n'.join(bad)
