# bothy Python runner: one long-lived interpreter of a code context.
#
# Written into the sandbox by the agent and started as `python3 runner.py`. Protocol (one JSON
# object per line): requests {"id", "code"} arrive on fd 3; events leave on fd 4:
#   {"t":"ready"}  {"t":"out"|"err","s":text}  {"t":"result","r":{text,html,png,...}}
#   {"t":"error","name","value","traceback"}  {"t":"started","id"}  {"t":"done","id"}
# fd 1 and 2 stay the raw process output (subprocesses, C extensions), which the agent streams
# too. SIGINT interrupts a running cell (KeyboardInterrupt); it is ignored between cells.
# Only the standard library is needed; matplotlib and pandas light up when the user imports them.
import _thread
import ast
import builtins
import json
import os
import signal
import sys
import types

_CTL = open(3, "rb", buffering=0, closefd=True)
_EVT = 4
_MAIN = _thread.get_ident()
_lock = _thread.allocate_lock()
_running = False  # a cell is running: SIGINT raises KeyboardInterrupt
_in_send = False  # the main thread is writing an event line: SIGINT waits until it is out
_deferred = False
# Text written without a newline yet, as [tag, text]; sent when a newline comes, before any
# other event, or by the flusher thread shortly after.
_partial = None
_flusher = None


def _on_sigint(signum, frame):
    global _deferred
    if not _running:
        return
    if _in_send:
        # A KeyboardInterrupt in the middle of a write would cut a line in two.
        _deferred = True
        return
    raise KeyboardInterrupt


def _write_line(msg):
    data = (json.dumps(msg, ensure_ascii=False, default=str) + "\n").encode("utf-8", "surrogateescape")
    view = memoryview(data)
    while view:
        view = view[os.write(_EVT, view):]


def _send(msg, text=None):
    """Sends an event (or, with `text`, stream output) in order with everything before it."""
    global _in_send, _deferred, _partial
    main = _thread.get_ident() == _MAIN
    if main:
        _in_send = True
    try:
        with _lock:
            if text is not None:
                tag = msg
                if _partial is not None and _partial[0] != tag:
                    _write_line({"t": _partial[0], "s": _partial[1]})
                    _partial = None
                if _partial is not None:
                    text = _partial[1] + text
                    _partial = None
                if "\n" in text or len(text) > 8192:
                    _write_line({"t": tag, "s": text})
                else:
                    _partial = [tag, text]
                    _start_flusher()
                return
            if _partial is not None:
                _write_line({"t": _partial[0], "s": _partial[1]})
                _partial = None
            _write_line(msg)
    finally:
        if main:
            _in_send = False
            if _deferred:
                _deferred = False
                raise KeyboardInterrupt


def _flush_partial():
    global _partial
    with _lock:
        if _partial is not None:
            _write_line({"t": _partial[0], "s": _partial[1]})
            _partial = None


def _start_flusher():
    global _flusher
    if _flusher is None:
        _flusher = True

        def loop():
            import time

            while True:
                time.sleep(0.03)
                _flush_partial()

        _thread.start_new_thread(loop, ())


class _RawBytes:
    """`sys.stdout.buffer`: bytes go straight to the raw descriptor, byte-exact."""

    def __init__(self, fd):
        self._fd = fd

    def write(self, b):
        b = bytes(b)
        view = memoryview(b)
        while view:
            view = view[os.write(self._fd, view):]
        return len(b)

    def flush(self):
        pass

    def fileno(self):
        return self._fd


class _Stream:
    """`sys.stdout`/`sys.stderr`: every write becomes an event at once (no buffering)."""

    def __init__(self, tag, fd):
        self._tag = tag
        self._fd = fd
        self.buffer = _RawBytes(fd)
        self.encoding = "utf-8"
        self.errors = "strict"

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        if s:
            _send(self._tag, text=s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def readable(self):
        return False

    def writable(self):
        return True

    @property
    def closed(self):
        return False


_MIME = (
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("text/plain", "text"),
)
_REPR = (
    ("_repr_html_", "html"),
    ("_repr_markdown_", "markdown"),
    ("_repr_svg_", "svg"),
    ("_repr_png_", "png"),
    ("_repr_jpeg_", "jpeg"),
    ("_repr_latex_", "latex"),
    ("_repr_json_", "json"),
)


def _norm(key, value):
    if isinstance(value, tuple) and value:  # (data, metadata)
        value = value[0]
    if value is None:
        return None
    if key in ("png", "jpeg"):
        if isinstance(value, (bytes, bytearray)):
            import base64

            return base64.b64encode(bytes(value)).decode("ascii")
        return str(value)
    if key == "json":
        if isinstance(value, (str, bytes)):
            try:
                return json.loads(value)
            except ValueError:
                return None
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return None
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _formats(obj):
    """Every representation `obj` offers, keyed by the API's names."""
    out = {}
    try:
        bundle_fn = getattr(type(obj), "_repr_mimebundle_", None)
    except Exception:
        bundle_fn = None
    if bundle_fn is not None and callable(bundle_fn):
        try:
            bundle = obj._repr_mimebundle_()
            if isinstance(bundle, tuple):
                bundle = bundle[0]
            for mime, key in _MIME:
                if isinstance(bundle, dict) and mime in bundle:
                    v = _norm(key, bundle[mime])
                    if v is not None:
                        out[key] = v
        except Exception:
            pass
    for meth, key in _REPR:
        if key in out:
            continue
        # Look the method up on the type, so objects answering every attribute (mocks,
        # proxies) do not look like they offer every format.
        if getattr(type(obj), meth, None) is None:
            continue
        try:
            v = _norm(key, getattr(obj, meth)())
        except Exception:
            continue
        if v is not None:
            out[key] = v
    if "json" not in out and isinstance(obj, (dict, list)):
        v = _norm("json", obj)
        if v is not None:
            out["json"] = v
    if "text" not in out:
        try:
            out["text"] = repr(obj)
        except Exception as e:
            out["text"] = "<repr failed: %s>" % type(e).__name__
    return out


def display(*objs, **_kwargs):
    """Shows each object as a rich result (like IPython's display)."""
    for obj in objs:
        r = _formats(obj)
        r["is_main_result"] = False
        _send({"t": "result", "r": r})


def _capture_figures():
    """Sends every open matplotlib figure as a PNG and closes it; only if the user imported
    pyplot (matplotlib is never imported here otherwise: it costs ~0.3 s)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        nums = plt.get_fignums()
    except Exception:
        return
    if not nums:
        return
    import base64
    import io

    for num in nums:
        try:
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", bbox_inches="tight")
            r = {
                "png": base64.b64encode(buf.getvalue()).decode("ascii"),
                "text": repr(fig),
                "is_main_result": False,
            }
            _send({"t": "result", "r": r})
        except Exception as e:
            _send("err", text="bothy: could not render figure %s: %s\n" % (num, e))
    try:
        plt.close("all")
    except Exception:
        pass


_RUNNER_FILE = os.path.abspath(__file__)


def _report(exc):
    import traceback

    tb = exc.__traceback__
    # Hide the runner's own frames: the traceback starts in the user's code.
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == _RUNNER_FILE:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        lines = traceback.format_exception_only(type(exc), exc)
    else:
        lines = traceback.format_exception(type(exc), exc, tb)
    _send(
        {
            "t": "error",
            "name": type(exc).__name__,
            "value": str(exc),
            "traceback": "".join(lines),
        }
    )


_main = types.ModuleType("__main__")
_main.__dict__["__builtins__"] = builtins
_NS = _main.__dict__
_loop = None
_count = 0


def _run_async(coro):
    global _loop
    import asyncio

    if _loop is None:
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(coro)


def _run_cell(code):
    global _count
    import linecache

    _count += 1
    filename = "<cell %d>" % _count
    # Tracebacks show the cell's lines.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    tree = ast.parse(code, filename=filename, mode="exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    body = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
    r = eval(body, _NS)
    if body.co_flags & 0x80:  # CO_COROUTINE: the cell awaits at top level
        _run_async(r)
    if last is not None:
        expr = compile(last, filename, "eval", flags=flags, dont_inherit=True)
        value = eval(expr, _NS)
        if expr.co_flags & 0x80:
            value = _run_async(value)
        if value is not None:
            builtins._ = value
            r = _formats(value)
            r["is_main_result"] = True
            _send({"t": "result", "r": r})


def _serve():
    global _count, _running
    sys.stdout = _Stream("out", 1)
    sys.stderr = _Stream("err", 2)
    sys.stdin = open(os.devnull, "r")
    # Like an interactive interpreter: modules in the working directory are importable, the
    # runner's own directory is not.
    sys.path[0] = ""
    sys.modules["__main__"] = _main
    builtins.display = display
    import warnings

    # With the Agg backend plt.show() cannot show anything: figures are captured after the cell.
    warnings.filterwarnings("ignore", message=".*non-interactive, and thus cannot be shown")
    signal.signal(signal.SIGINT, _on_sigint)
    _send({"t": "ready", "pid": os.getpid()})
    buf = b""
    while True:
        chunk = _CTL.read(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            try:
                _running = True
                # From here on SIGINT interrupts the cell; the agent waits for this line before
                # it sends one, so an early interrupt is never lost.
                _send({"t": "started", "id": req.get("id")})
                try:
                    _run_cell(req["code"])
                finally:
                    _capture_figures()
            except BaseException as e:  # noqa: B036 - the cell's errors, KeyboardInterrupt included
                _running = False
                if isinstance(e, SystemExit):
                    _send("err", text="bothy: SystemExit(%r) ignored; the context goes on\n" % (e.code,))
                else:
                    try:
                        _report(e)
                    except BaseException:
                        _send({"t": "error", "name": type(e).__name__, "value": "", "traceback": ""})
            finally:
                _running = False
            _send({"t": "done", "id": req.get("id")})


_serve()
