"""A loopback stand-in for the Hub endpoints that create_repo, create_branch, upload_folder (plain LFS, no Xet), the
Trainer's push_to_hub and from_pretrained use. huggingface_hub honours HF_ENDPOINT on every call, so pointing it here
runs the real client code against files we can inspect. Not a Hub: one process, memory only, no auth checks beyond
"a token was sent"."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class Repo:
    def __init__(self, private: bool):
        self.private = private
        self.branches: dict[str, dict[str, bytes]] = {"main": {}}
        self.heads: dict[str, str] = {"main": "0" * 40}
        self.commits: list[dict] = []
        self.snapshots: dict[str, dict[str, bytes]] = {}  # commit sha -> files, for downloads pinned to a commit

    def files_at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision in self.branches:
            return self.heads[revision], self.branches[revision]
        return (revision, self.snapshots[revision]) if revision in self.snapshots else None


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.tokens_seen: set[str] = set()
        self.requests: list[str] = []
        self.validated_cards: list[dict] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub._route(self, "GET")

            def do_HEAD(self):
                hub._route(self, "HEAD")

            def do_POST(self):
                hub._route(self, "POST")

            def do_PUT(self):
                hub._route(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].branches[revision]

    # --- routing -----------------------------------------------------------------------------------------------------

    def _route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append(f"{method} {path}")
        auth = h.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            self.tokens_seen.add(auth[7:])
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        with self.lock:
            try:
                self._dispatch(h, method, path, body)
            except KeyError as e:
                self._json(h, 404, {"error": f"not found: {e}"}, {"X-Error-Code": "RepoNotFound"})

    def _dispatch(self, h, method, path, body):
        m = None
        if method == "POST" and path == "/api/repos/create":
            data = json.loads(body)
            repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
            if repo_id in self.repos:
                return self._json(h, 409, {"error": "You already created this model repo", "url": self._url(repo_id)})
            self.repos[repo_id] = Repo(data.get("visibility") == "private" or bool(data.get("private")))
            return self._json(h, 200, {"url": self._url(repo_id), "name": repo_id, "id": repo_id})
        if method == "POST" and path == "/api/validate-yaml":  # the card's metadata: the real Hub checks it
            data = json.loads(body)
            self.validated_cards.append(data)
            return self._json(h, 200, {"errors": [], "warnings": []})
        if method == "GET" and path == "/api/whoami-v2":
            return self._json(h, 200, {"name": "tester", "type": "user", "auth": {"accessToken": {"role": "write"}}})
        if method == "POST" and (m := re.fullmatch(r"/api/models/(.+)/branch/(.+)", path)):
            repo = self.repos[m[1]]
            repo.branches.setdefault(m[2], dict(repo.branches["main"]))
            repo.heads.setdefault(m[2], repo.heads["main"])
            return self._json(h, 200, {})
        if method == "POST" and (m := re.fullmatch(r"/api/models/(.+)/preupload/(.+)", path)):
            self.repos[m[1]]
            files = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith((".safetensors", ".gguf", ".bin"))
                      else "regular", "shouldIgnore": False} for f in json.loads(body)["files"]]
            return self._json(h, 200, {"files": files})
        if method == "POST" and (m := re.fullmatch(r"/(.+)\.git/info/lfs/objects/batch", path)):
            objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                        "actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}}}
                       for o in json.loads(body)["objects"]]
            return self._json(h, 200, {"transfer": "basic", "objects": objects})
        if method == "PUT" and (m := re.fullmatch(r"/lfs-upload/([0-9a-f]+)", path)):
            if hashlib.sha256(body).hexdigest() != m[1]:
                return self._json(h, 400, {"error": "sha256 mismatch"})
            self.lfs[m[1]] = body
            return self._json(h, 200, {})
        if method == "POST" and (m := re.fullmatch(r"/api/models/(.+)/commit/(.+)", path)):
            return self._commit(h, m[1], m[2], body)
        if method == "GET" and (m := re.fullmatch(r"/api/models/(.+?)(?:/revision/(.+))?", path)):
            if "/tree/" in path:  # list_repo_tree (e.g. additional_chat_templates/): nothing there
                return self._json(h, 404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
            sha, files = self.repos[m[1]].files_at(m[2] or "main")
            return self._json(h, 200, {"id": m[1], "modelId": m[1], "sha": sha, "private": self.repos[m[1]].private,
                                       "siblings": [{"rfilename": f} for f in sorted(files)]})
        if method in ("GET", "HEAD") and (m := re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", path)):
            return self._resolve(h, method, m[1], m[2], m[3])
        self._json(h, 404, {"error": f"no route {method} {path}"})

    def _commit(self, h, repo_id, revision, body):
        repo = self.repos[repo_id]
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        files = repo.branches[revision]
        for x in lines:
            value = x["value"]
            if x["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif x["key"] == "lfsFile":
                files[value["path"]] = self.lfs[value["oid"]]
            elif x["key"] == "deletedFile":
                files.pop(value["path"], None)
        sha = hashlib.sha1(json.dumps([header, sorted(files)]).encode() + repo.heads[revision].encode()).hexdigest()
        repo.heads[revision] = sha
        repo.snapshots[sha] = dict(files)
        repo.commits.append({"revision": revision, "summary": header.get("summary"), "sha": sha})
        return self._json(h, 200, {"commitUrl": f"{self._url(repo_id)}/commit/{sha}", "commitOid": sha})

    def _resolve(self, h, method, repo_id, revision, filename):
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._json(h, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        found = repo.files_at(revision)
        if found is None:
            return self._json(h, 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        sha, files = found
        data = files.get(filename)
        if data is None:
            return self._json(h, 404, {"error": "Entry not found"},
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
        h.send_response(200)
        h.send_header("X-Repo-Commit", sha)
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if method == "GET":
            h.wfile.write(data)

    def _url(self, repo_id):
        return f"{self.url}/{repo_id}"

    @staticmethod
    def _json(h, status, payload, headers=None):
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
