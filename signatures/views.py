"""The signatures page: compare, signers and their references, verify, the encoders."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from signatures.selectors import encoder_list, signer_list

SIGNERS_SHOWN = 500


@ensure_csrf_cookie  # the page's writes go to the API with the session and its CSRF token
def signatures_page(request: HttpRequest) -> HttpResponse:
    signers = list(signer_list().order_by("name", "pk")[: SIGNERS_SHOWN + 1])
    return render(request, "signatures/signatures.html", {
        "encoders": encoder_list(),
        "signers": signers[:SIGNERS_SHOWN],
        "more_signers": len(signers) > SIGNERS_SHOWN,
        "staff": request.user.is_staff,
    })  # fmt: skip
