from django.urls import path

from signatures import apis

app_name = "signatures"
urlpatterns = [
    path("signatures/compare/", apis.SignatureCompareApi.as_view(), name="compare"),
    path("signatures/signers/", apis.SignerListApi.as_view(), name="signer-list"),
    path("signatures/signers/<int:pk>/", apis.SignerDetailApi.as_view(), name="signer-detail"),
    path("signatures/signers/<int:pk>/references/", apis.ReferenceListApi.as_view(), name="reference-list"),
    path(
        "signatures/signers/<int:pk>/references/<int:reference_pk>/",
        apis.ReferenceDetailApi.as_view(),
        name="reference-detail",
    ),  # fmt: skip
    path(
        "signatures/signers/<int:pk>/references/<int:reference_pk>/image/",
        apis.ReferenceImageApi.as_view(),
        name="reference-image",
    ),  # fmt: skip
    path("signatures/signers/<int:pk>/verify/", apis.SignatureVerifyApi.as_view(), name="verify"),
    path("signatures/verifications/<int:pk>/image/", apis.VerificationImageApi.as_view(), name="verification-image"),
    path("signatures/models/", apis.EncoderListApi.as_view(), name="encoder-list"),
    path("signatures/models/<str:key>/activate/", apis.EncoderActivateApi.as_view(), name="encoder-activate"),
]
