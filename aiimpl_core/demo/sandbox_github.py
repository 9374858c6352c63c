"""The demo's sandbox GitHub: just enough of the REST API for the session to open a pull request
and for ``aiimpl check`` (the Checks panel) to read the repository, and a page per pull request
showing its diff from the local git repository. Every page says it is a sandbox; nothing here talks
to github.com."""
from __future__ import annotations

import html
import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

BANNER = "Sandbox GitHub (demo) — this is not github.com"


@dataclass
class PullRequest:
    number: int
    owner: str
    repo: str
    title: str
    body: str
    head: str
    base: str


class SandboxGitHub:
    def __init__(self, git_root: str) -> None:
        self.git_root = git_root
        self.pulls: list[PullRequest] = []
        self.lock = threading.Lock()
        self.app = self._make_app()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.api_url = f"{self.url}/api/v3"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def start(self) -> SandboxGitHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()

    def pr_url(self, pr: PullRequest) -> str:
        return f"{self.url}/{pr.owner}/{pr.repo}/pull/{pr.number}"

    def _diff(self, pr: PullRequest) -> str:
        repo = f"{self.git_root}/{pr.owner}/{pr.repo}.git"
        out = subprocess.run(["git", "--git-dir", repo, "diff", f"{pr.base}...{pr.head}"],
                             capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else out.stderr

    def _make_app(self) -> Flask:
        app = Flask("aiimpl_sandbox_github")

        @app.post("/api/v3/repos/<owner>/<repo>/pulls")
        def create_pull(owner: str, repo: str) -> Any:
            body = request.get_json(silent=True) or {}
            for field in ("title", "head", "base"):
                if not isinstance(body.get(field), str) or not body[field]:
                    return jsonify(message="Validation Failed",
                                   errors=[{"field": field, "code": "missing_field"}]), 422
            with self.lock:
                if any(p.owner == owner and p.repo == repo and p.head == body["head"] for p in self.pulls):
                    return jsonify(message="Validation Failed",
                                   errors=[{"message": "A pull request already exists for "
                                                       f"{owner}:{body['head']}."}]), 422
                pr = PullRequest(len(self.pulls) + 1, owner, repo, body["title"], body.get("body") or "",
                                 body["head"], body["base"])
                self.pulls.append(pr)
            return jsonify(number=pr.number, html_url=self.pr_url(pr), state="open", title=pr.title,
                           head={"ref": pr.head}, base={"ref": pr.base}), 201

        @app.get("/api/v3/repos/<owner>/<repo>/actions/runs")
        def list_runs(owner: str, repo: str) -> Any:
            # what the check of a personal token reads: the repository's runs (the demo has none)
            if not os.path.isdir(os.path.join(self.git_root, owner, f"{repo}.git")):
                return jsonify(message="Not Found", status="404"), 404
            return jsonify(total_count=0, workflow_runs=[])

        @app.get("/")
        def index() -> Any:
            items = "".join(f'<li><a href="{html.escape(self.pr_url(p))}">'
                            f"{html.escape(p.owner)}/{html.escape(p.repo)}"
                            f" #{p.number}: {html.escape(p.title)}</a></li>" for p in self.pulls)
            return _page(BANNER, f"<h1>Pull requests</h1><ul>{items or '<li>none yet</li>'}</ul>")

        @app.get("/<owner>/<repo>/pull/<int:number>")
        def show(owner: str, repo: str, number: int) -> Any:
            pr = next((p for p in self.pulls if (p.owner, p.repo, p.number) == (owner, repo, number)), None)
            if pr is None:
                return _page(BANNER, "<h1>Not found</h1>"), 404
            return _page(BANNER, f"<h1>{html.escape(pr.title)} <small>#{pr.number}</small></h1>"
                                 f"<p><code>{html.escape(pr.head)}</code> → "
                                 f"<code>{html.escape(pr.base)}</code></p>"
                                 f"<pre class='body'>{html.escape(pr.body)}</pre>"
                                 f"<h2>Diff</h2><pre>{html.escape(self._diff(pr))}</pre>")

        return app


def _page(banner: str, content: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(banner)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:0 auto;padding:16px}"
            ".b{background:#fff4ce;padding:6px 10px;font-weight:600}pre{background:#f6f8fa;padding:10px;"
            "overflow:auto}</style></head>"
            f"<body><div class='b'>{html.escape(banner)}</div>{content}</body></html>")
