"""References for the scale benchmarks: the data path as an mmpose-0.x-era codebase runs it,
on OpenCV and NumPy, written here for the benchmark (it shares no code with posebh).

* :func:`train_sample`: ``LoadImageFromFile`` (``cv2.imread`` + BGR→RGB) →
  ``TopDownRandomFlip`` → ``TopDownHalfBodyTransform`` → ``TopDownGetRandomScaleRotation`` →
  ``TopDownAffine`` (UDP, ``cv2.warpAffine``) → ``ToTensor`` + ``NormalizeTensor`` →
  ``TopDownGenerateTarget`` (UDP Gaussian in a 13×13 window per joint), targets padded to the
  multi-dataset 133 channels: COCO's training settings in the PoseBH config;
* :func:`eval_sample`: the evaluation crop of one box, read from its file like the per-box
  loaders do (``cv2.imread`` every box), UDP ``cv2.warpAffine`` and normalisation.

Its random draws are NumPy's, not posebh's, so it does the same *work* as posebh's pipeline,
not the same samples; the benchmarks compare throughput only.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

IMAGE_SIZE = np.array([192, 256])
HEATMAP_SIZE = np.array([48, 64])
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
COCO_UPPER_BODY = tuple(range(11))
MAX_NUM_JOINTS = 133
SIGMA = 2.0


def warp_matrix(theta: float, size_input, size_dst, size_target) -> np.ndarray:
    """UDP's ``get_warp_matrix``: rotate by theta about the box centre, scale into the crop."""
    theta = np.deg2rad(theta)
    scale_x = size_dst[0] / size_target[0]
    scale_y = size_dst[1] / size_target[1]
    m = np.zeros((2, 3), dtype=np.float32)
    m[0, 0] = math.cos(theta) * scale_x
    m[0, 1] = -math.sin(theta) * scale_x
    m[0, 2] = scale_x * (
        -0.5 * size_input[0] * math.cos(theta)
        + 0.5 * size_input[1] * math.sin(theta)
        + 0.5 * size_target[0]
    )
    m[1, 0] = math.sin(theta) * scale_y
    m[1, 1] = math.cos(theta) * scale_y
    m[1, 2] = scale_y * (
        -0.5 * size_input[0] * math.sin(theta)
        - 0.5 * size_input[1] * math.cos(theta)
        + 0.5 * size_target[1]
    )
    return m


def read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)


def udp_target(joints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = len(joints)
    weight = visible[:, :1].astype(np.float32).copy()
    target = np.zeros((MAX_NUM_JOINTS, HEATMAP_SIZE[1], HEATMAP_SIZE[0]), dtype=np.float32)
    tmp_size = SIGMA * 3
    stride = (IMAGE_SIZE - 1.0) / (HEATMAP_SIZE - 1.0)
    size = int(2 * tmp_size + 1)
    x = np.arange(0, size, 1, np.float32)
    y = x[:, None]
    for j in range(k):
        mu_x = int(joints[j, 0] / stride[0] + 0.5)
        mu_y = int(joints[j, 1] / stride[1] + 0.5)
        ul = [mu_x - tmp_size, mu_y - tmp_size]
        br = [mu_x + tmp_size + 1, mu_y + tmp_size + 1]
        if ul[0] >= HEATMAP_SIZE[0] or ul[1] >= HEATMAP_SIZE[1] or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        x0 = y0 = size // 2
        x0 += joints[j, 0] / stride[0] - mu_x
        y0 += joints[j, 1] / stride[1] - mu_y
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * SIGMA**2))
        g_x = max(0, -int(ul[0])), min(int(br[0]), HEATMAP_SIZE[0]) - int(ul[0])
        g_y = max(0, -int(ul[1])), min(int(br[1]), HEATMAP_SIZE[1]) - int(ul[1])
        img_x = max(0, int(ul[0])), min(int(br[0]), HEATMAP_SIZE[0])
        img_y = max(0, int(ul[1])), min(int(br[1]), HEATMAP_SIZE[1])
        if weight[j] > 0.5:
            target[j, img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[
                g_y[0] : g_y[1], g_x[0] : g_x[1]
            ]
    padded = np.zeros((MAX_NUM_JOINTS, 1), dtype=np.float32)
    padded[:k] = weight
    return target, padded


def _half_body(joints, visible, rng) -> tuple[np.ndarray, np.ndarray] | None:
    upper, lower = [], []
    for j in range(len(joints)):
        if visible[j, 0] > 0:
            (upper if j in COCO_UPPER_BODY else lower).append(joints[j])
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None
    pts = np.array(selected, dtype=np.float32)
    center = pts.mean(axis=0)[:2]
    w, h = pts.max(axis=0)[:2] - pts.min(axis=0)[:2]
    aspect = IMAGE_SIZE[0] / IMAGE_SIZE[1]
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return center, np.array([w / 200.0, h / 200.0], dtype=np.float32) * 1.5


def train_sample(
    path: str, keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, rng
) -> dict:
    """One COCO training sample (see the module docstring)."""
    image = read_rgb(path)
    joints = np.zeros((len(keypoints), 3), dtype=np.float32)
    joints[:, :2] = keypoints[:, :2]
    visible = np.zeros_like(joints)
    visible[:, :2] = np.minimum(1, keypoints[:, 2:3])
    c, s = center.astype(np.float32).copy(), scale.astype(np.float32).copy()
    if rng.random() <= 0.5:
        image = image[:, ::-1, :]
        width = image.shape[1]
        for a, b in COCO_FLIP_PAIRS:
            joints[[a, b]] = joints[[b, a]]
            visible[[a, b]] = visible[[b, a]]
        joints[:, 0] = width - 1 - joints[:, 0]
        joints *= visible
        c[0] = width - c[0] - 1
    if visible[:, 0].sum() > 8 and rng.random() < 0.3:
        box = _half_body(joints, visible, rng)
        if box is not None:
            c, s = box
    sf, rf = 0.5, 40.0
    s = s * np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf)
    r = np.clip(rng.standard_normal() * rf, -rf * 2, rf * 2) if rng.random() <= 0.6 else 0.0
    m = warp_matrix(r, c * 2.0, IMAGE_SIZE - 1.0, s * 200.0)
    crop = cv2.warpAffine(image, m, (192, 256), flags=cv2.INTER_LINEAR)
    joints[:, :2] = joints[:, :2] @ m[:, :2].T + m[:, 2]
    target, weight = udp_target(joints, visible)
    return {
        "img": to_tensor(crop),
        "target": torch.from_numpy(target),
        "target_weight": torch.from_numpy(weight),
    }


def eval_crop(path: str, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """One box's evaluation crop [256, 192, 3] uint8, its image read for it alone."""
    image = read_rgb(path)
    m = warp_matrix(0.0, center * 2.0, IMAGE_SIZE - 1.0, scale * 200.0)
    return cv2.warpAffine(image, m, (192, 256), flags=cv2.INTER_LINEAR)


def eval_sample(path: str, center: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """One box's normalised evaluation crop (the per-box loaders)."""
    return to_tensor(eval_crop(path, center, scale))
