"""REST endpoints for signatures (see API.md): compare, signers, references, verify, encoders."""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import ANYONE, needs
from accounts.models import AuditEntry
from accounts.services import audit_record
from signatures.models import Reference, Signer, Verification
from signatures.selectors import encoder_list, reference_get, reference_list, signer_get, signer_list
from signatures.services.compare import signatures_compare
from signatures.services.encoders import encoder_activate
from signatures.services.enrolment import reference_delete, references_enrol, signer_create, signer_delete
from signatures.services.inputs import signature_from_upload
from signatures.services.verify import signature_verify, verification_explain
from simsite.drf import OutputSerializer, PageNumberPagination, error_body, paginated_items, paginated_response
from simsite.errors import ServiceError
from simsite.files import private_file_response


class SignerOutput(OutputSerializer):
    references = serializers.IntegerField(source="reference_count", read_only=True, default=0)

    class Meta:
        model = Signer
        fields = ["id", "name", "external_id", "references", "created_at"]


class ReferenceOutput(OutputSerializer):
    image_url = serializers.SerializerMethodField()
    filename = serializers.CharField(source="original_filename")

    class Meta:
        model = Reference
        fields = ["id", "signer", "filename", "image_url", "width", "height", "consistency", "outlier", "created_at"]

    def get_image_url(self, obj: Reference) -> str:
        # Served by an authorised view, never from /media/ (README, "Users and permissions").
        path = reverse("signatures:reference-image", args=[obj.signer_id, obj.pk])
        return self.context["request"].build_absolute_uri(path)


class PerReference(serializers.Serializer):
    reference = serializers.IntegerField()
    similarity = serializers.FloatField()


class OperatingPoint(serializers.Serializer):
    name = serializers.ChoiceField(["eer", "target_far", "requested"], help_text="What set the threshold: the "
                                   "equal-error point, SIGNATURE_TARGET_FAR, or the request's threshold")  # fmt: skip
    threshold = serializers.FloatField()
    references = serializers.IntegerField()
    target_far = serializers.FloatField(required=False)
    calibrated_with_references = serializers.IntegerField(required=False, help_text="the reference count whose "
                                                          "validation measurement set the threshold")  # fmt: skip
    expected_far = serializers.FloatField(required=False, help_text="skilled forgeries accepted there (validation)")
    expected_frr = serializers.FloatField(required=False, help_text="genuine signatures refused there (validation)")
    calibrated_on = serializers.CharField(required=False)


class VerificationOutput(OutputSerializer):
    verification_id = serializers.IntegerField(source="pk")
    model = serializers.CharField(source="encoder")
    per_reference = PerReference(many=True)
    score = serializers.FloatField(help_text="The score that decided: the best similarity (writer_independent) or "
                                   "the signer's own model's decision value (writer_dependent)")  # fmt: skip
    similarity = serializers.FloatField(allow_null=True, help_text="The best cosine similarity to a reference")
    confidence = serializers.FloatField(
        allow_null=True,
        help_text="Calibrated probability that the signature is genuine (equal priors); null without a calibration",
    )
    operating_point = OperatingPoint()

    class Meta:
        model = Verification
        fields = ["verification_id", "signer", "decision", "score", "threshold", "mode", "similarity", "confidence",
                  "operating_point", "references_used", "per_reference", "model", "created_at"]  # fmt: skip


class ClosestReference(serializers.Serializer):
    id = serializers.IntegerField()
    similarity = serializers.FloatField()
    preview = serializers.CharField(required=False, help_text="PNG data URL of the reference as the model saw it")


class VerifyOutput(VerificationOutput):
    """A verification as the verify call answers it: with its explanation."""

    preview = serializers.CharField(help_text="PNG data URL of the questioned signature as the model saw it")
    closest_reference = ClosestReference()
    overlay = serializers.CharField(required=False, help_text="PNG data URL: the questioned ink red, the closest "
                                    "reference's blue, ink they share dark")  # fmt: skip
    verification_url = serializers.CharField()

    class Meta(VerificationOutput.Meta):
        fields = [*VerificationOutput.Meta.fields, "preview", "closest_reference", "overlay", "verification_url"]


class SignatureCompareApi(APIView):
    """Two signatures: the same writer or not? A read (it stores nothing): open to everyone."""

    access = {"POST": ANYONE}
    throttle_scope = "signatures"
    error_statuses = {
        409: "The active encoder is not ready.",
        **{503: "The model's weights are missing on this server, or its CUDA device is gone."},
    }

    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        image1 = serializers.FileField()
        image2 = serializers.FileField()
        threshold = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)

    @extend_schema(
        request=InputSerializer,
        responses=inline_serializer(
            "SignatureComparison",
            {
                "similarity": serializers.FloatField(),
                "threshold": serializers.FloatField(),
                "result": serializers.ChoiceField(choices=["Matched", "Unmatched"]),
                "model": serializers.CharField(),
                "previews": serializers.DictField(
                    child=serializers.CharField(),
                    help_text="PNG data URLs of what the model saw (the preprocessed signatures)",
                ),  # fmt: skip
            },
        ),
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        first = signature_from_upload(file=values["image1"], field="image1")
        second = signature_from_upload(file=values["image2"], field="image2")
        return Response(signatures_compare(first=first, second=second, threshold=values.get("threshold")))


class SignerListApi(APIView):
    access = {"GET": needs("signatures.view_signer"), "POST": needs("signatures.add_signer")}
    pagination_class = PageNumberPagination
    error_statuses = {"POST": {409: "A signer with this external_id exists already."}}
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=255)
        external_id = serializers.CharField(max_length=128, required=False, allow_blank=True, default="")

    @extend_schema(responses=SignerOutput(many=True))
    def get(self, request: Request) -> Response:
        return paginated_response(queryset=signer_list(), serializer_class=SignerOutput, request=request, view=self)

    @extend_schema(request=InputSerializer, responses={201: SignerOutput})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        signer = signer_create(**data.validated_data)
        audit_record(user=request.user, action=AuditEntry.Action.SIGNER_CREATE, target=f"signer {signer.pk}",
                     request=request)  # fmt: skip
        return Response(SignerOutput(signer_get(pk=signer.pk)).data, status=201)


class SignerDetailApi(APIView):
    access = {"GET": needs("signatures.view_signer"), "DELETE": needs("signatures.delete_signer")}

    @extend_schema(responses=SignerOutput)
    def get(self, request: Request, pk: int) -> Response:
        return Response(SignerOutput(signer_get(pk=pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        signer = signer_get(pk=pk)
        references = signer.reference_count
        signer_delete(signer=signer)
        audit_record(user=request.user, action=AuditEntry.Action.SIGNER_DELETE, target=f"signer {pk}",
                     detail={"references": references}, request=request)  # fmt: skip
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReferenceListApi(APIView):
    access = {"GET": needs("signatures.view_reference"), "POST": needs("signatures.add_reference")}
    pagination_class = PageNumberPagination
    throttle_scope = {"POST": "upload"}
    error_statuses = {"POST": {503: "The model's weights are missing on this server, or its CUDA device is gone."}}
    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        files = serializers.ListField(child=serializers.FileField(), allow_empty=False, max_length=50)

    @extend_schema(responses=ReferenceOutput(many=True))
    def get(self, request: Request, pk: int) -> Response:
        references = reference_list(signer=signer_get(pk=pk))
        return paginated_response(queryset=references, serializer_class=ReferenceOutput, request=request, view=self)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "Enrolment",
                {
                    "created": ReferenceOutput(many=True),
                    "rejected": serializers.ListField(child=serializers.DictField()),
                },
            )
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        signer = signer_get(pk=pk)
        files = request.FILES.getlist("files")
        if not files:
            raise ServiceError("files_required", "Send one or more signature images in the 'files' field.",
                               field="files")  # fmt: skip
        if len(files) > 50:
            raise ServiceError("too_many_files", "Enrol at most 50 references at a time.", field="files")
        created, rejected = references_enrol(signer=signer, files=files)
        if not created:
            first = rejected[0]
            body = error_body(first["code"], f"{first['filename']}: {first['error']}", "files")
            return Response({**body, "created": [], "rejected": rejected}, status=400)
        audit_record(user=request.user, action=AuditEntry.Action.REFERENCES_ENROL, target=f"signer {signer.pk}",
                     detail={"references": [reference.pk for reference in created], "refused": len(rejected)},
                     request=request)  # fmt: skip
        output = ReferenceOutput(created, many=True, context={"request": request})
        return Response({"created": output.data, "rejected": rejected}, status=201)


class ReferenceDetailApi(APIView):
    access = {"DELETE": needs("signatures.delete_reference")}

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int, reference_pk: int) -> Response:
        reference_delete(reference=reference_get(signer_pk=pk, pk=reference_pk))
        audit_record(user=request.user, action=AuditEntry.Action.REFERENCE_DELETE,
                     target=f"reference {reference_pk} of signer {pk}", request=request)  # fmt: skip
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReferenceImageApi(APIView):
    """A reference signature's image, to users who may see references (never a public URL)."""

    access = {"GET": needs("signatures.view_reference")}
    error_statuses = {404: "No such reference, or its file is missing from storage."}

    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request: Request, pk: int, reference_pk: int) -> HttpResponse:
        reference = reference_get(signer_pk=pk, pk=reference_pk)
        return private_file_response(name=reference.file.name)


class VerificationImageApi(APIView):
    """A verification's questioned signature, to users who may read the verification log."""

    access = {"GET": needs("signatures.view_verification")}
    error_statuses = {404: "No such verification, or its file is missing from storage."}

    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request: Request, pk: int) -> HttpResponse:
        return private_file_response(name=Verification.objects.get(pk=pk).questioned.name)


class SignatureVerifyApi(APIView):
    """Is a questioned signature genuine for this signer? Logged, and audited."""

    access = {"POST": needs("signatures.add_verification")}
    throttle_scope = "signatures"
    error_statuses = {
        409: "The signer has no references, or a reference's file is missing or unreadable.",
        **{503: "The model's weights are missing on this server, or its CUDA device is gone."},
    }

    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        image = serializers.FileField()
        threshold = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)

    @extend_schema(request=InputSerializer, responses=VerifyOutput)
    def post(self, request: Request, pk: int) -> Response:
        signer = signer_get(pk=pk)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        questioned = signature_from_upload(file=data.validated_data["image"], field="image")
        verification = signature_verify(
            signer=signer, questioned=questioned, threshold=data.validated_data.get("threshold"), user=request.user
        )
        audit_record(user=request.user, action=AuditEntry.Action.SIGNATURE_VERIFY, target=f"signer {signer.pk}",
                     detail={"verification": verification.pk, "decision": verification.decision},
                     request=request)  # fmt: skip
        explained = verification_explain(verification=verification, questioned=questioned)
        body = dict(VerificationOutput(verification).data)
        body["preview"] = explained.pop("questioned_preview")
        body |= explained
        body["verification_url"] = request.build_absolute_uri(
            reverse("admin:signatures_verification_change", args=[verification.pk])
        )
        return Response(body)


class EncoderListApi(APIView):
    access = {"GET": needs("signatures.view_signatureencoder")}
    pagination_class = PageNumberPagination

    @extend_schema(
        responses=inline_serializer(
            "SignatureEncoder",
            {
                "key": serializers.CharField(),
                "kind": serializers.CharField(),
                "dim": serializers.IntegerField(),
                "description": serializers.CharField(),
                "threshold": serializers.FloatField(allow_null=True, help_text="null until trained"),
                "thresholds": serializers.DictField(
                    child=serializers.FloatField(), help_text="verify's threshold by reference count (at least)"
                ),
                "eer": serializers.FloatField(allow_null=True),
                "auc": serializers.FloatField(allow_null=True),
                "dataset": serializers.CharField(allow_null=True),
                "metrics": serializers.DictField(),
                "active": serializers.BooleanField(),
                "status": serializers.ChoiceField(["queued", "running", "succeeded", "failed"]),
                "progress": serializers.FloatField(),
                "message": serializers.CharField(help_text="What a training run is doing, or why it failed"),
                "plots": serializers.DictField(child=serializers.CharField(), help_text="plot name -> image URL"),
            },
            many=True,
        )
    )
    def get(self, request: Request) -> Response:
        return paginated_items(items=encoder_list(), request=request, view=self)


class EncoderActivateApi(APIView):
    access = {"POST": needs("signatures.change_activeencoder")}
    error_statuses = {409: "The encoder is not trained (yet)."}

    @extend_schema(request=None, responses=inline_serializer("ActivatedEncoder", {"active": serializers.CharField()}))
    def post(self, request: Request, key: str) -> Response:
        active = encoder_activate(key=key)
        audit_record(user=request.user, action=AuditEntry.Action.ENCODER_ACTIVATE, target=f"signature encoder {active}",
                     request=request)  # fmt: skip
        return Response({"active": active})
