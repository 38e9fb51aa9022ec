from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from accounts.models import AuditEntry
from accounts.services import audit_record
from catalog.admin import ProductAdmin
from catalog.models import Product
from search.datasets import CATALOG
from search.models import Collection, DuplicateDismissal, EmbeddingModelChoice, IndexJob, SearchTuning, TrainedModel
from search.registry import TRAINABLE_BASES
from search.selectors.embedding_models import active_model_key, embedding_model_list, model_specs
from search.selectors.jobs import index_job_failures
from search.services.activation import active_model_set
from search.services.indexing import index_job_cancel, index_job_create, items_index
from search.services.trained_models import (
    DEFAULT_TRAINING_EPOCHS,
    model_training_start,
    model_training_validate,
    trained_model_delete,
)
from simsite.errors import ServiceError

# The catalog's product admin, with the action that needs search: the catalog knows nothing of
# search, so search registers the products' admin again with its action added.
admin.site.unregister(Product)


@admin.register(Product)
class ProductWithReindexAdmin(ProductAdmin):
    actions = [*ProductAdmin.actions, "reindex"]

    @admin.action(description="Reindex selected (embed again with every model in use)")
    def reindex(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        job = items_index(product_ids=ids, mode=IndexJob.Mode.ALL)
        self.message_user(request, f"{len(ids)} products queued for embedding (index job {job.pk}, on /jobs/).")


class ModelTrainingForm(forms.ModelForm):
    """Start a training run: the catalog, or a folder under EMBEDDING_TRAINING_ROOT, trained by a worker."""

    key = forms.CharField(required=False, max_length=40, help_text="Blank: <base>_ft_<date>_<time>")
    data = forms.CharField(initial=CATALOG, help_text="'catalog' (products by category), or a folder of labelled "
                           "images relative to EMBEDDING_TRAINING_ROOT")  # fmt: skip
    base = forms.ChoiceField(choices=[(base, base) for base in TRAINABLE_BASES])
    epochs = forms.IntegerField(min_value=1, max_value=200, initial=DEFAULT_TRAINING_EPOCHS,
                                help_text="At most; training stops when validation stops improving")  # fmt: skip
    activate = forms.BooleanField(required=False, help_text="Index everything with it, then make searches use it")

    class Meta:
        model = TrainedModel
        fields = ["key"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            try:
                cleaned["run"] = model_training_validate(
                    key=cleaned.get("key") or None, data=cleaned["data"], base=cleaned["base"],
                    epochs=cleaned["epochs"], activate=cleaned["activate"], within_root=True,
                )  # fmt: skip
            except ServiceError as error:
                self.add_error(error.field if error.field in self.fields else None, error.message)
        return cleaned


@admin.register(TrainedModel)
class TrainedModelAdmin(admin.ModelAdmin):
    """Embedding models trained here: start a training, follow it, compare its test metrics
    with its base model's, build its index and activate it."""

    list_display = ["key", "base", "status", "progress_percent", "precision_10", "base_precision_10", "is_active",
                    "created_at"]  # fmt: skip
    list_filter = ["status", "base"]
    actions = ["build_and_activate"]
    readonly_fields = ["key", "base", "status", "progress_percent", "message", "is_active", "source", "config",
                       "dim", "classes", "metrics_table", "plot_images", "fingerprint", "seconds", "created_at",
                       "finished_at"]  # fmt: skip
    fields = readonly_fields

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ModelTrainingForm
            kwargs["fields"] = None
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["key", "data", "base", "epochs", "activate"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a training run is started (added) and followed, never edited

    def save_model(self, request: HttpRequest, obj: TrainedModel, form: Any, change: bool) -> None:
        run = form.cleaned_data["run"]
        trained = model_training_start(data=run["source"], base=run["base"], epochs=run["config"]["epochs"],
                                       key=run["key"], activate=run["activate_when_done"])  # fmt: skip
        obj.pk, obj.key = trained.pk, trained.key
        audit_record(user=request.user, action=AuditEntry.Action.MODEL_TRAIN, target=f"embedding model {trained.key}",
                     detail={"base": trained.base, "via": "admin"}, request=request)  # fmt: skip

    def delete_model(self, request: HttpRequest, obj: TrainedModel) -> None:
        key = obj.key
        trained_model_delete(trained=obj)
        audit_record(user=request.user, action=AuditEntry.Action.MODEL_DELETE, target=f"embedding model {key}",
                     detail={"via": "admin"}, request=request)  # fmt: skip

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for trained in queryset:
            try:
                self.delete_model(request, trained)
            except ServiceError as error:  # active, training or being indexed: kept, and said why
                self.message_user(request, error.message, messages.ERROR)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> Any:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:search_trainedmodel_changelist"))

    @admin.action(description="Build its index, then activate (no downtime)")
    def build_and_activate(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model.", messages.ERROR)
            return
        trained = queryset.get()
        try:
            job = index_job_create(collection=Collection.ALL, model=trained.key, activate_when_done=True)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"Index job {job.pk} builds {trained.key}'s vectors; searches switch to it when "
                          "it succeeds (follow it on /jobs/).")  # fmt: skip

    @admin.display(description="Progress")
    def progress_percent(self, obj: TrainedModel) -> str:
        return f"{obj.progress:.0%}"

    @admin.display(description="Active", boolean=True)
    def is_active(self, obj: TrainedModel) -> bool:
        return obj.key == active_model_key()

    @admin.display(description="P@10 (test)")
    def precision_10(self, obj: TrainedModel) -> object:
        return obj.metrics.get("test", {}).get("precision@10", "-")

    @admin.display(description="Base P@10 (test)")
    def base_precision_10(self, obj: TrainedModel) -> object:
        return obj.metrics.get("base_test", {}).get("precision@10", "-")

    @admin.display(description="Metrics (held-out test split)")
    def metrics_table(self, obj: TrainedModel) -> str:
        trained, base = obj.metrics.get("test_by_class"), obj.metrics.get("base_test_by_class")
        if not trained or not base:
            return "-"
        rows = [("all", obj.metrics["test"], obj.metrics["base_test"])]
        rows += [(label, values, base.get(label, {})) for label, values in trained.items()]
        names = ["precision@1", "precision@10", "recall@10", "map@10"]
        return format_html(
            "<table><tr><th>class</th>{}</tr>{}</table><p>classifier accuracy {}</p>",
            format_html_join("", "<th>{}</th>", ((f"{name} (base)",) for name in names)),
            format_html_join(
                "", "<tr><td>{}</td>{}</tr>",
                ((label, format_html_join("", "<td>{} ({})</td>", ((t.get(n), b.get(n, "-")) for n in names)))
                 for label, t, b in rows),
            ),
            obj.metrics.get("test_accuracy", "-"),
        )  # fmt: skip

    @admin.display(description="Plots")
    def plot_images(self, obj: TrainedModel) -> str:
        return format_html_join(
            "", '<a href="{0}"><img src="{0}" alt="{1}" height="220" loading="lazy"></a> ',
            ((default_storage.url(name), label) for label, name in obj.plots.items()),
        ) or "-"  # fmt: skip


class IndexJobForm(forms.ModelForm):
    """Queue an index job: a collection's items embedded with a model by the workers."""

    model = forms.ChoiceField(help_text="Blank: the active model")

    class Meta:
        model = IndexJob
        fields = ["collection", "model", "mode", "activate_when_done"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "model" in self.fields:  # the add form (a job's own page is read-only)
            self.fields["model"].choices = [(spec.key, spec.key) for spec in model_specs()]
            self.fields["model"].initial = active_model_key()


@admin.register(IndexJob)
class IndexJobAdmin(admin.ModelAdmin):
    """Index jobs: queue one, follow its progress and failures, cancel it."""

    list_display = ["id", "collection", "model", "mode", "state", "progress", "failed", "activate_when_done",
                    "created_at", "finished_at"]  # fmt: skip
    list_filter = ["state", "collection", "model"]
    actions = ["cancel"]
    readonly_fields = ["collection", "model", "mode", "activate_when_done", "state", "progress", "failed", "error",
                       "failures", "created_at", "started_at", "finished_at"]  # fmt: skip
    form = IndexJobForm

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["collection", "model", "mode", "activate_when_done"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a job is queued (added), followed and cancelled, never edited

    def save_model(self, request: HttpRequest, obj: IndexJob, form: Any, change: bool) -> None:
        data = form.cleaned_data
        job = index_job_create(collection=data["collection"], model=data["model"], mode=data["mode"],
                               activate_when_done=data["activate_when_done"])  # fmt: skip
        obj.pk = job.pk

    @admin.display(description="Progress")
    def progress(self, obj: IndexJob) -> str:
        return format_html('<progress max="100" value="{}"></progress> {} / {} ({}%)', obj.percent, obj.done,
                           obj.total, obj.percent)  # fmt: skip

    @admin.display(description="Failed items")
    def failures(self, obj: IndexJob) -> str:
        rows = index_job_failures(job=obj)
        return format_html_join("", "<div>{} {}: {}</div>", ((r["type"], r["id"], r["error"]) for r in rows)) or "-"

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        cancelled = 0
        for job in queryset.active():
            index_job_cancel(job=job)
            cancelled += 1
        self.message_user(request, f"{cancelled} job{'s' if cancelled != 1 else ''} cancelled"
                          + ("; the others had finished." if cancelled < queryset.count() else "."))  # fmt: skip


@admin.register(EmbeddingModelChoice)
class EmbeddingModelAdmin(admin.ModelAdmin):
    """Every embedding model (pretrained and trained here) with its coverage; staff build an
    index for one, or make it the model searches use."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_change_permission(request):
                return HttpResponse(status=403)
            self._act(request, request.POST.get("action", ""), request.POST.get("model", ""))
            return HttpResponseRedirect(request.get_full_path())
        models = [{**row, "precision_10": row["metrics"].get("test", {}).get("precision@10"),
                   "items": row["embedded"] + row["missing"]} for row in embedding_model_list()]  # fmt: skip
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Embedding models",
                   "models": models, "can_change": self.has_change_permission(request)}  # fmt: skip
        return TemplateResponse(request, "admin/search/embeddingmodelchoice/change_list.html", context)

    def _act(self, request: HttpRequest, action: str, model: str) -> None:
        try:
            if action == "activate":
                key = active_model_set(model=model, force=request.POST.get("force") == "1")
                audit_record(user=request.user, action=AuditEntry.Action.MODEL_ACTIVATE,
                             target=f"embedding model {key}",
                             detail={"via": "admin"}, request=request)  # fmt: skip
                self.message_user(request, f"Searches now use {key}.")
            elif action in ("build", "build_activate"):
                job = index_job_create(collection=Collection.ALL, model=model, activate_when_done=action != "build")
                then = "; searches switch to it when it succeeds." if job.activate_when_done else "."
                self.message_user(request, f"Index job {job.pk} queued for {job.model}{then}")
            else:
                self.message_user(request, "Unknown action.", messages.ERROR)
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)


@admin.register(DuplicateDismissal)
class DuplicateDismissalAdmin(admin.ModelAdmin):
    """Groups marked as not duplicates on the review page; delete one to let its items be
    grouped again."""

    list_display = ["id", "members", "created_by", "created_at"]

    @admin.display(description="Items")
    def members(self, obj: DuplicateDismissal) -> str:
        return ", ".join(str(item) for item in obj.items.all()[:10])

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("items")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SearchTuning)
class SearchTuningAdmin(admin.ModelAdmin):
    """The hnsw.ef_search measured on each model's index (``manage.py tune_search``, Celery
    beat). Read only; delete one to search by the index's size again until it is re-tuned."""

    list_display = ["model", "ef_search", "recall", "target_recall", "vectors", "queries", "tuned_at"]
    readonly_fields = ["model", "ef_search", "recall", "target_recall", "vectors", "queries", "steps", "tuned_at"]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
