"""The signatures page: compare, signers and their references, verify, the encoders."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from signatures.selectors import encoder_list, signer_list

SIGNERS_SHOWN = 500


@ensure_csrf_cookie  # the page's writes go to the API with the session and its CSRF token
def signatures_page(request: HttpRequest) -> HttpResponse:
    """Compare is open to everyone; the signers, their references and verification need the
    signature permissions, the encoders their view permission (the page shows what one may use)."""
    context: dict[str, object] = {"signers": [], "encoders": []}
    if request.user.has_perm("signatures.view_signer"):
        signers = list(signer_list().order_by("name", "pk")[: SIGNERS_SHOWN + 1])
        context.update(signers=signers[:SIGNERS_SHOWN], more_signers=len(signers) > SIGNERS_SHOWN)
    if request.user.has_perm("signatures.view_signatureencoder"):
        context["encoders"] = encoder_list()
    return render(request, "signatures/signatures.html", context)
