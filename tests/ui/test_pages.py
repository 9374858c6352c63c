"""The pages as served, before any script runs: what a browser makes of them by itself."""
from __future__ import annotations

import re


def test_a_secrets_value_is_never_filled_in_with_the_saved_access_code(client):
    """The sign-in's access code is a password a browser may save for this site; a password field
    marked ``autocomplete="off"`` is filled in with it all the same (browsers ignore "off" on
    password fields), and a secret set without a look at its value would be the admin access code,
    handed to every session. ``new-password`` is the value that keeps saved passwords out."""
    html = client.get("/ui/secrets").get_data(as_text=True)
    [value] = re.findall(r'<input id="s-value"[^>]*>', html)
    assert 'type="password"' in value and 'autocomplete="new-password"' in value
    [name] = re.findall(r'<input id="s-name"[^>]*>', html)
    assert 'autocomplete="off"' in name  # nor a user name in the secret's name
    signin = client.get("/ui/signin").get_data(as_text=True)
    assert 'autocomplete="current-password"' in signin
