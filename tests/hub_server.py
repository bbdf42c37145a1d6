"""A Hugging Face hub on loopback for the publishing tests: a real HTTP server (stdlib) that
answers exactly the endpoints `huggingface_hub`'s client calls to publish, so that the client's
own code runs unchanged against it (pointed at it through `HF_ENDPOINT`):

* `POST /api/repos/create` (409 when the repo exists), `POST /api/validate-yaml` (the card);
* `POST /api/{type}s/{repo}/paths-info/{rev}` and `GET .../tree/{rev}/{path}`: what the repo holds
  (git blob ids; LFS files with their sha256 and pointer, as the hub reports them);
* `HEAD`/`GET /{type prefix}{repo}/resolve/{rev}/{path}`: a file's bytes (`hf_hub_download`);
* `POST .../preupload/{rev}` (parquet goes to LFS, as the hub's default `.gitattributes` says),
  the LFS batch API `POST {repo}.git/info/lfs/objects/batch` and the upload itself (`PUT`);
* `GET /api/{type}s/{repo}` (the head commit) and `POST .../commit/{rev}`: the NDJSON commit,
  applied to the repo, refused (412) when its parent commit is no longer the head.

Every request is recorded with its headers and body, so a test checks what would have been
sent: paths, bytes, the number of commits, and that the token travels only in `Authorization`.
Requests without the expected bearer token are refused (401), except LFS uploads, which go to
pre-signed storage URLs on the real hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".arrow", ".png", ".safetensors")


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)
    sha: str = "0" * 40


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HubState:
    token: str
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # LFS store, by sha256
    requests: list[Request] = field(default_factory=list)
    commits: list[list[dict]] = field(default_factory=list)  # each commit's NDJSON lines
    lock: threading.Lock = field(default_factory=threading.Lock)

    def entry(self, repo: Repo, path: str) -> dict:
        data = repo.files[path]
        if path in repo.lfs:
            pointer = lfs_pointer(data)
            lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
            return {"type": "file", "path": path, "oid": git_oid(pointer), "size": len(data), "lfs": lfs}
        return {"type": "file", "path": path, "oid": git_oid(data), "size": len(data)}


_API = re.compile(
    r"^/api/(models|datasets)/([^/]+/[^/]+)/(paths-info|tree|preupload|commit|revision)/([^/]+)(?:/(.*))?$"
)
_INFO = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)$")
_RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(r"^/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    base: str

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: object = None, headers: dict[str, str] | None = None, head=False):
        data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _not_found(self, code: str, head=False):
        self._send(404, {"error": code}, {"Content-Type": "application/json", "X-Error-Code": code}, head)

    def _handle(self, method: str) -> None:
        body = self._body() if method in ("POST", "PUT") else b""
        url = urlsplit(self.path)
        path = url.path
        st = self.state
        with st.lock:
            st.requests.append(Request(method, self.path, dict(self.headers.items()), body))
        if method == "PUT" and path.startswith("/lfs-upload/"):
            oid = path.rsplit("/", 1)[-1]
            if hashlib.sha256(body).hexdigest() != oid:
                return self._send(400, {"error": "sha256 mismatch"})
            with st.lock:
                st.blobs[oid] = body
            return self._send(200, {})
        if self.headers.get("Authorization") != f"Bearer {st.token}":
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        head = method == "HEAD"
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = (
                f"{payload['organization']}/{payload['name']}"
                if payload.get("organization")
                else payload["name"]
            )
            key = (payload.get("type") or "model", repo_id)
            url = f"{self.base}/{key[0]}s/{repo_id}"
            with st.lock:
                if key in st.repos:  # the hub names the existing repo in its 409
                    return self._send(409, {"error": "You already created this repo", "url": url})
                st.repos[key] = Repo(
                    private=payload.get("visibility") == "private" or bool(payload.get("private"))
                )
            return self._send(200, {"url": url})
        if method == "POST" and path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if m := _LFS_BATCH.match(path):
            return self._lfs_batch(json.loads(body))
        if m := _RESOLVE.match(path):
            kind = "dataset" if m.group(1) else "model"
            repo = st.repos.get((kind, unquote(m.group(2))))
            file = unquote(m.group(4))
            if repo is None:
                return self._not_found("RepoNotFound", head)
            if file not in repo.files:
                return self._not_found("EntryNotFound", head)
            info = st.entry(repo, file)
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{info["oid"]}"'}
            if "lfs" in info:
                headers |= {"X-Linked-Etag": f'"{info["lfs"]["oid"]}"', "X-Linked-Size": str(info["size"])}
            return self._send(200, repo.files[file], headers, head)
        if m := _INFO.match(path):
            repo = st.repos.get((m.group(1)[:-1], unquote(m.group(2))))
            if repo is None:
                return self._not_found("RepoNotFound", head)
            return self._send(200, {"id": unquote(m.group(2)), "sha": repo.sha, "private": repo.private})
        m = _API.match(path)
        if not m:
            return self._send(404, {"error": f"no route {method} {path}"})
        kind, repo_id, action, _rev, rest = (
            m.group(1)[:-1],
            unquote(m.group(2)),
            m.group(3),
            m.group(4),
            m.group(5),
        )
        repo = st.repos.get((kind, repo_id))
        if repo is None:
            return self._not_found("RepoNotFound", head)
        if action == "revision":
            return self._send(200, {"id": repo_id, "sha": repo.sha, "private": repo.private, "siblings": []})
        if action == "paths-info":
            wanted = parse_qs(body.decode()).get("paths", [])
            return self._send(200, [st.entry(repo, p) for p in wanted if p in repo.files])
        if action == "tree":
            folder = unquote(rest or "").rstrip("/")
            inside = [p for p in sorted(repo.files) if not folder or p.startswith(folder + "/")]
            if folder and not inside:
                return self._not_found("EntryNotFound")
            return self._send(200, [st.entry(repo, p) for p in inside])
        if action == "preupload":
            files = json.loads(body)["files"]
            out = []
            for f in files:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000
                remote = None
                if f["path"] in repo.files:
                    info = st.entry(repo, f["path"])
                    remote = info["lfs"]["oid"] if "lfs" in info else info["oid"]
                out.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": remote,
                    }
                )
            return self._send(200, {"files": out})
        if action == "commit":
            return self._commit(kind, repo_id, repo, body)
        return self._send(404, {"error": "no route"})

    def _lfs_batch(self, payload: dict) -> None:
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.blobs:
                entry["actions"] = {"upload": {"href": f"{self.base}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _commit(self, kind: str, repo_id: str, repo: Repo, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        parent = lines[0]["value"].get("parentCommit")
        with self.state.lock:
            if parent is not None and parent != repo.sha:  # the branch moved since it was read
                return self._send(412, {"error": f"parent commit {parent} is not the head {repo.sha}"})
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    repo.files[value["path"]] = base64.b64decode(value["content"])
                    repo.lfs.discard(value["path"])
                elif line["key"] == "lfsFile":
                    if value["oid"] not in self.state.blobs:
                        return self._send(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                    repo.files[value["path"]] = self.state.blobs[value["oid"]]
                    repo.lfs.add(value["path"])
                elif line["key"] == "deletedFile":
                    repo.files.pop(value["path"], None)
                    repo.lfs.discard(value["path"])
                else:
                    return self._send(400, {"error": f"unsupported commit line {line['key']}"})
            repo.sha = hashlib.sha1(repo.sha.encode() + body).hexdigest()
            self.state.commits.append(lines)
        url = f"{self.base}/{kind}s/{repo_id}/commit/{repo.sha}"
        self._send(200, {"success": True, "commitOid": repo.sha, "commitUrl": url, "pullRequestUrl": None})

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")


class HubServer:
    """`with HubServer(token) as hub:` -> hub.url (for HF_ENDPOINT), hub.state."""

    def __init__(self, token: str):
        self.state = HubState(token=token)
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        handler.base = self.url
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def repo(self, repo_id: str, kind: str = "dataset") -> Repo:
        return self.state.repos[(kind, repo_id)]
