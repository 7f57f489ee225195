"""google/youtube-8m's evaluation code, transliterated line by line: the slow, obvious reference.

Sources (read, not imported; the originals need TF 1.x): `average_precision_calculator.py`,
`mean_average_precision_calculator.py` (with `filter_empty_classes`, as in hughshaoqz's copy),
`eval_util.py`, `segment_eval_inference.py` (hughshaoqz's copy: header line skipped,
`positive_counter.get(label_id, 0)`). Only TF I/O, logging and flags are left out. The official
code reseeds Python's global RNG; the entry points here restore it afterwards.
"""

import functools
import heapq
import numbers
import random

import numpy


def _keep_global_rng(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        state = random.getstate()
        try:
            return fn(*args, **kwargs)
        finally:
            random.setstate(state)

    return wrapper


class AveragePrecisionCalculator:
    def __init__(self, top_n=None):
        if not ((isinstance(top_n, int) and top_n >= 0) or top_n is None):
            raise ValueError("top_n must be a positive integer or None.")
        self._top_n = top_n
        self._total_positives = 0
        self._heap = []

    @property
    def heap_size(self):
        return len(self._heap)

    @property
    def num_accumulated_positives(self):
        return self._total_positives

    def accumulate(self, predictions, actuals, num_positives=None):
        if len(predictions) != len(actuals):
            raise ValueError("the shape of predictions and actuals does not match.")
        if num_positives is not None:
            if not isinstance(num_positives, numbers.Number) or num_positives < 0:
                raise ValueError("'num_positives' was provided but it was a negative number.")
        if num_positives is not None:
            self._total_positives += num_positives
        else:
            self._total_positives += numpy.size(numpy.where(numpy.array(actuals) > 1e-5))
        topk = self._top_n
        heap = self._heap
        for i in range(numpy.size(predictions)):
            if topk is None or len(heap) < topk:
                heapq.heappush(heap, (predictions[i], actuals[i]))
            else:
                if predictions[i] > heap[0][0]:
                    heapq.heappop(heap)
                    heapq.heappush(heap, (predictions[i], actuals[i]))

    def peek_ap_at_n(self):
        if self.heap_size <= 0:
            return 0
        predlists = numpy.array(list(zip(*self._heap)))
        ap = self.ap_at_n(
            predlists[0], predlists[1], n=self._top_n, total_num_positives=self._total_positives
        )
        return ap

    @staticmethod
    def ap_at_n(predictions, actuals, n=20, total_num_positives=None):
        if len(predictions) != len(actuals):
            raise ValueError("the shape of predictions and actuals does not match.")
        if n is not None:
            if not isinstance(n, int) or n <= 0:
                raise ValueError("n must be 'None' or a positive integer. It was '%s'." % n)  # noqa: UP031
        ap = 0.0
        predictions = numpy.array(predictions)
        actuals = numpy.array(actuals)
        # add a shuffler to avoid overestimating the ap
        predictions, actuals = AveragePrecisionCalculator._shuffle(predictions, actuals)
        sortidx = sorted(range(len(predictions)), key=lambda k: predictions[k], reverse=True)
        if total_num_positives is None:
            numpos = numpy.size(numpy.where(actuals > 0))
        else:
            numpos = total_num_positives
        if numpos == 0:
            return 0
        if n is not None:
            numpos = min(numpos, n)
        delta_recall = 1.0 / numpos
        poscount = 0.0
        r = len(sortidx)
        if n is not None:
            r = min(r, n)
        for i in range(r):
            if actuals[sortidx[i]] > 0:
                poscount += 1
                ap += poscount / (i + 1) * delta_recall
        return ap

    @staticmethod
    def _shuffle(predictions, actuals):
        random.seed(0)
        suffidx = random.sample(range(len(predictions)), len(predictions))
        predictions = predictions[suffidx]
        actuals = actuals[suffidx]
        return predictions, actuals


class MeanAveragePrecisionCalculator:
    def __init__(self, num_class, filter_empty_classes=True, top_n=None):
        if not isinstance(num_class, int) or num_class <= 1:
            raise ValueError("num_class must be a positive integer.")
        self._ap_calculators = []
        self._num_class = num_class
        self._filter_empty_classes = filter_empty_classes
        for _ in range(num_class):
            self._ap_calculators.append(AveragePrecisionCalculator(top_n=top_n))

    def accumulate(self, predictions, actuals, num_positives=None):
        if not num_positives:
            num_positives = [None for i in range(self._num_class)]
        calculators = self._ap_calculators
        for i in range(self._num_class):
            calculators[i].accumulate(predictions[i], actuals[i], num_positives[i])

    def peek_map_at_n(self):
        aps = []
        for i in range(self._num_class):
            if not self._filter_empty_classes or self._ap_calculators[i].num_accumulated_positives > 0:
                ap = self._ap_calculators[i].peek_ap_at_n()
                aps.append(ap)
        return aps


def flatten(l):  # noqa: E741 - the official name
    return [item for sublist in l for item in sublist]


def calculate_hit_at_one(predictions, actuals):
    top_prediction = numpy.argmax(predictions, 1)
    hits = actuals[numpy.arange(actuals.shape[0]), top_prediction]
    return numpy.average(hits)


def calculate_precision_at_equal_recall_rate(predictions, actuals):
    aggregated_precision = 0.0
    num_videos = actuals.shape[0]
    for row in numpy.arange(num_videos):
        num_labels = int(numpy.sum(actuals[row]))
        top_indices = numpy.argpartition(predictions[row], -num_labels)[-num_labels:]
        item_precision = 0.0
        for label_index in top_indices:
            if predictions[row][label_index] > 0:
                item_precision += actuals[row][label_index]
        item_precision /= top_indices.size
        aggregated_precision += item_precision
    aggregated_precision /= num_videos
    return aggregated_precision


@_keep_global_rng
def calculate_gap(predictions, actuals, top_k=20):
    gap_calculator = AveragePrecisionCalculator()
    sparse_predictions, sparse_labels, num_positives = top_k_by_class(predictions, actuals, top_k)
    gap_calculator.accumulate(flatten(sparse_predictions), flatten(sparse_labels), sum(num_positives))
    return gap_calculator.peek_ap_at_n()


def top_k_by_class(predictions, labels, k=20):
    if k <= 0:
        raise ValueError("k must be a positive integer.")
    k = min(k, predictions.shape[1])
    num_classes = predictions.shape[1]
    prediction_triplets = []
    for video_index in range(predictions.shape[0]):
        prediction_triplets.extend(top_k_triplets(predictions[video_index], labels[video_index], k))
    out_predictions = [[] for _ in range(num_classes)]
    out_labels = [[] for _ in range(num_classes)]
    for triplet in prediction_triplets:
        out_predictions[triplet[0]].append(triplet[1])
        out_labels[triplet[0]].append(triplet[2])
    out_true_positives = [numpy.sum(labels[:, i]) for i in range(num_classes)]
    return out_predictions, out_labels, out_true_positives


def top_k_triplets(predictions, labels, k=20):
    m = len(predictions)
    k = min(k, m)
    indices = numpy.argpartition(predictions, -k)[-k:]
    return [(index, predictions[index], labels[index]) for index in indices]


class EvaluationMetrics:
    """hit@1, PERR, per-class APs and GAP accumulated over batches (loss left out)."""

    def __init__(self, num_class, top_k, top_n=None):
        self.sum_hit_at_one = 0.0
        self.sum_perr = 0.0
        self.map_calculator = MeanAveragePrecisionCalculator(num_class, top_n=top_n)
        self.global_ap_calculator = AveragePrecisionCalculator()
        self.top_k = top_k
        self.num_examples = 0

    def accumulate(self, predictions, labels):
        batch_size = labels.shape[0]
        mean_hit_at_one = calculate_hit_at_one(predictions, labels)
        mean_perr = calculate_precision_at_equal_recall_rate(predictions, labels)
        sparse_predictions, sparse_labels, num_positives = top_k_by_class(predictions, labels, self.top_k)
        self.map_calculator.accumulate(sparse_predictions, sparse_labels, num_positives)
        self.global_ap_calculator.accumulate(
            flatten(sparse_predictions), flatten(sparse_labels), sum(num_positives)
        )
        self.num_examples += batch_size
        self.sum_hit_at_one += mean_hit_at_one * batch_size
        self.sum_perr += mean_perr * batch_size

    @_keep_global_rng
    def get(self):
        return {
            "avg_hit_at_one": self.sum_hit_at_one / self.num_examples,
            "avg_perr": self.sum_perr / self.num_examples,
            "aps": self.map_calculator.peek_map_at_n(),
            "gap": self.global_ap_calculator.peek_ap_at_n(),
        }


def read_segment_predictions(file_path, labels, top_n=None):
    cls_preds = {}
    with open(file_path) as fobj:
        for line in fobj:
            if "Class" in line:
                continue
            label_id, pred_ids_val = line.split(",")
            pred_ids = pred_ids_val.split(" ")
            if top_n:
                pred_ids = pred_ids[:top_n]
            pred_ids = [pred_id for pred_id in pred_ids if (pred_id, int(label_id)) in labels]
            cls_preds[int(label_id)] = pred_ids
    return cls_preds


@_keep_global_rng
def segment_map(submission_file, eval_labels, top_n=0):
    """`main` of segment_eval_inference.py; eval_labels is the {(segment_id, class): score} dict."""
    positive_counter = {}
    for k, v in eval_labels.items():
        _, label_id = k
        if v > 0:
            positive_counter[label_id] = positive_counter.get(label_id, 0) + 1
    seg_preds = read_segment_predictions(submission_file, eval_labels, top_n=top_n)
    map_cal = MeanAveragePrecisionCalculator(len(seg_preds))
    seg_labels = []
    seg_scored_preds = []
    num_positives = []
    for label_id in sorted(seg_preds):
        class_preds = seg_preds[label_id]
        seg_label = [eval_labels[(pred, label_id)] for pred in class_preds]
        seg_labels.append(seg_label)
        seg_scored_pred = []
        if class_preds:
            seg_scored_pred = [float(x) / len(class_preds) for x in range(len(class_preds), 0, -1)]
        seg_scored_preds.append(seg_scored_pred)
        num_positives.append(positive_counter.get(label_id, 0))
    map_cal.accumulate(seg_scored_preds, seg_labels, num_positives)
    return numpy.mean(map_cal.peek_map_at_n())


ap_at_n = _keep_global_rng(AveragePrecisionCalculator.ap_at_n)
