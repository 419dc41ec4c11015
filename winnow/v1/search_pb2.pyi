from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitSearchRequest(_message.Message):
    __slots__ = ("request_id", "spec_json")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    spec_json: str
    def __init__(self, request_id: _Optional[str] = ..., spec_json: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("trained", "max_trials", "proposals", "cache_hits", "pruned", "failed", "hypervolume", "best", "front_size", "leader", "candidates", "epochs", "front_epochs", "top_epochs", "evidence_ladder", "confirm_runs", "confirm_done", "confirm_failed")
    class BestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    HYPERVOLUME_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    FRONT_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    FRONT_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TOP_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_LADDER_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_RUNS_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_DONE_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_FAILED_FIELD_NUMBER: _ClassVar[int]
    trained: int
    max_trials: int
    proposals: int
    cache_hits: int
    pruned: int
    failed: int
    hypervolume: float
    best: _containers.ScalarMap[str, float]
    front_size: int
    leader: ParetoPoint
    candidates: int
    epochs: int
    front_epochs: int
    top_epochs: int
    evidence_ladder: _containers.RepeatedCompositeFieldContainer[LadderTier]
    confirm_runs: int
    confirm_done: int
    confirm_failed: int
    def __init__(self, trained: _Optional[int] = ..., max_trials: _Optional[int] = ..., proposals: _Optional[int] = ..., cache_hits: _Optional[int] = ..., pruned: _Optional[int] = ..., failed: _Optional[int] = ..., hypervolume: _Optional[float] = ..., best: _Optional[_Mapping[str, float]] = ..., front_size: _Optional[int] = ..., leader: _Optional[_Union[ParetoPoint, _Mapping]] = ..., candidates: _Optional[int] = ..., epochs: _Optional[int] = ..., front_epochs: _Optional[int] = ..., top_epochs: _Optional[int] = ..., evidence_ladder: _Optional[_Iterable[_Union[LadderTier, _Mapping]]] = ..., confirm_runs: _Optional[int] = ..., confirm_done: _Optional[int] = ..., confirm_failed: _Optional[int] = ...) -> None: ...

class LadderTier(_message.Message):
    __slots__ = ("tier", "n", "tau", "below_params", "params_n", "params_tau", "zero_weight")
    TIER_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    BELOW_PARAMS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_N_FIELD_NUMBER: _ClassVar[int]
    PARAMS_TAU_FIELD_NUMBER: _ClassVar[int]
    ZERO_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    tier: str
    n: int
    tau: float
    below_params: bool
    params_n: int
    params_tau: float
    zero_weight: bool
    def __init__(self, tier: _Optional[str] = ..., n: _Optional[int] = ..., tau: _Optional[float] = ..., below_params: _Optional[bool] = ..., params_n: _Optional[int] = ..., params_tau: _Optional[float] = ..., zero_weight: _Optional[bool] = ...) -> None: ...

class Search(_message.Message):
    __slots__ = ("id", "name", "status", "error", "spec_json", "created_at", "updated_at", "progress")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    status: str
    error: str
    spec_json: str
    created_at: float
    updated_at: float
    progress: Progress
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., spec_json: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class GetSearchRequest(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class ListSearchesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSearchesResponse(_message.Message):
    __slots__ = ("searches", "next_page_token")
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[Search]
    next_page_token: str
    def __init__(self, searches: _Optional[_Iterable[_Union[Search, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListTrialsRequest(_message.Message):
    __slots__ = ("search_id", "page_size", "page_token", "status", "stage", "epochs")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    page_size: int
    page_token: str
    status: str
    stage: str
    epochs: int
    def __init__(self, search_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[str] = ..., stage: _Optional[str] = ..., epochs: _Optional[int] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("row_id", "trial_id", "stage", "epochs", "rung", "status", "candidate_json", "metrics_json", "error", "reused", "seconds", "device", "structural_hash", "functional_hash", "host", "weights_kept", "loss_curve", "accuracy_curve")
    ROW_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    RUNG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_JSON_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STRUCTURAL_HASH_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONAL_HASH_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_KEPT_FIELD_NUMBER: _ClassVar[int]
    LOSS_CURVE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_CURVE_FIELD_NUMBER: _ClassVar[int]
    row_id: int
    trial_id: int
    stage: str
    epochs: int
    rung: int
    status: str
    candidate_json: str
    metrics_json: str
    error: str
    reused: bool
    seconds: float
    device: str
    structural_hash: str
    functional_hash: str
    host: str
    weights_kept: bool
    loss_curve: _containers.RepeatedScalarFieldContainer[float]
    accuracy_curve: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, row_id: _Optional[int] = ..., trial_id: _Optional[int] = ..., stage: _Optional[str] = ..., epochs: _Optional[int] = ..., rung: _Optional[int] = ..., status: _Optional[str] = ..., candidate_json: _Optional[str] = ..., metrics_json: _Optional[str] = ..., error: _Optional[str] = ..., reused: _Optional[bool] = ..., seconds: _Optional[float] = ..., device: _Optional[str] = ..., structural_hash: _Optional[str] = ..., functional_hash: _Optional[str] = ..., host: _Optional[str] = ..., weights_kept: _Optional[bool] = ..., loss_curve: _Optional[_Iterable[float]] = ..., accuracy_curve: _Optional[_Iterable[float]] = ...) -> None: ...

class ListTrialsResponse(_message.Message):
    __slots__ = ("trials", "next_page_token")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    next_page_token: str
    def __init__(self, trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchSearchRequest(_message.Message):
    __slots__ = ("search_id", "after_event_id")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    after_event_id: int
    def __init__(self, search_id: _Optional[str] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class SearchEvent(_message.Message):
    __slots__ = ("id", "kind", "time", "payload_json", "search")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: str
    time: float
    payload_json: str
    search: Search
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[str] = ..., time: _Optional[float] = ..., payload_json: _Optional[str] = ..., search: _Optional[_Union[Search, _Mapping]] = ...) -> None: ...

class CancelSearchRequest(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class GetParetoFrontRequest(_message.Message):
    __slots__ = ("search_id",)
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    def __init__(self, search_id: _Optional[str] = ...) -> None: ...

class ParetoPoint(_message.Message):
    __slots__ = ("trial_id", "objectives", "candidate_json", "confirmed")
    class ObjectivesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    trial_id: int
    objectives: _containers.ScalarMap[str, float]
    candidate_json: str
    confirmed: Confirmed
    def __init__(self, trial_id: _Optional[int] = ..., objectives: _Optional[_Mapping[str, float]] = ..., candidate_json: _Optional[str] = ..., confirmed: _Optional[_Union[Confirmed, _Mapping]] = ...) -> None: ...

class Confirmed(_message.Message):
    __slots__ = ("objectives", "seeds", "on_front", "single_run")
    class ObjectivesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ConfirmedFigures
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ConfirmedFigures, _Mapping]] = ...) -> None: ...
    class SingleRunEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    ON_FRONT_FIELD_NUMBER: _ClassVar[int]
    SINGLE_RUN_FIELD_NUMBER: _ClassVar[int]
    objectives: _containers.MessageMap[str, ConfirmedFigures]
    seeds: int
    on_front: bool
    single_run: _containers.ScalarMap[str, float]
    def __init__(self, objectives: _Optional[_Mapping[str, ConfirmedFigures]] = ..., seeds: _Optional[int] = ..., on_front: _Optional[bool] = ..., single_run: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ConfirmedFigures(_message.Message):
    __slots__ = ("mean", "std", "lower")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    lower: float
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ..., lower: _Optional[float] = ...) -> None: ...

class ParetoFront(_message.Message):
    __slots__ = ("objectives", "points", "hypervolume", "epochs", "top_epochs")
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    HYPERVOLUME_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TOP_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    objectives: _containers.RepeatedScalarFieldContainer[str]
    points: _containers.RepeatedCompositeFieldContainer[ParetoPoint]
    hypervolume: float
    epochs: int
    top_epochs: int
    def __init__(self, objectives: _Optional[_Iterable[str]] = ..., points: _Optional[_Iterable[_Union[ParetoPoint, _Mapping]]] = ..., hypervolume: _Optional[float] = ..., epochs: _Optional[int] = ..., top_epochs: _Optional[int] = ...) -> None: ...

class ExportRecipeRequest(_message.Message):
    __slots__ = ("search_id", "trial_id", "format")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    trial_id: int
    format: str
    def __init__(self, search_id: _Optional[str] = ..., trial_id: _Optional[int] = ..., format: _Optional[str] = ...) -> None: ...

class Recipe(_message.Message):
    __slots__ = ("search_id", "trial_id", "recipe_json", "files")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPE_JSON_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    trial_id: int
    recipe_json: str
    files: _containers.ScalarMap[str, bytes]
    def __init__(self, search_id: _Optional[str] = ..., trial_id: _Optional[int] = ..., recipe_json: _Optional[str] = ..., files: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class GetImportanceRequest(_message.Message):
    __slots__ = ("search_id", "epochs", "evaluator", "min_trials")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    MIN_TRIALS_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    epochs: int
    evaluator: str
    min_trials: int
    def __init__(self, search_id: _Optional[str] = ..., epochs: _Optional[int] = ..., evaluator: _Optional[str] = ..., min_trials: _Optional[int] = ...) -> None: ...

class ParamImportance(_message.Message):
    __slots__ = ("name", "importance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    importance: float
    def __init__(self, name: _Optional[str] = ..., importance: _Optional[float] = ...) -> None: ...

class Importance(_message.Message):
    __slots__ = ("epochs", "objective", "trials", "results", "params", "left_out")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    objective: str
    trials: int
    results: int
    params: _containers.RepeatedCompositeFieldContainer[ParamImportance]
    left_out: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, epochs: _Optional[int] = ..., objective: _Optional[str] = ..., trials: _Optional[int] = ..., results: _Optional[int] = ..., params: _Optional[_Iterable[_Union[ParamImportance, _Mapping]]] = ..., left_out: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportanceReport(_message.Message):
    __slots__ = ("evaluator", "min_trials", "importances")
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    MIN_TRIALS_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCES_FIELD_NUMBER: _ClassVar[int]
    evaluator: str
    min_trials: int
    importances: _containers.RepeatedCompositeFieldContainer[Importance]
    def __init__(self, evaluator: _Optional[str] = ..., min_trials: _Optional[int] = ..., importances: _Optional[_Iterable[_Union[Importance, _Mapping]]] = ...) -> None: ...
