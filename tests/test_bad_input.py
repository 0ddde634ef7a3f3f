""" The bad-input table of docs/bad-input.md, row by row: each bad input raises its exception type with a message
naming the
problem, and no model comes back; the inputs the table accepts load or run as it says.

Missing keys, extra keys, wrong shapes and another variant's checkpoint have their tests in test_pretrained.py, a
pickle that would run code in test_hostile.py; the table names them too, and test_readme_table checks that every
test it names exists.
"""
import logging
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch

import timm

from common import checkpoint, listed, serve_modified

VARIANT = 'hrnet_w18_small'
TABLE = Path(__file__).parent.parent / 'docs' / 'bad-input.md'


def _load_file(path) -> torch.nn.Module:
    return timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def _write_truncated_safetensors(path: Path) -> None:
    safetensors.torch.save_file({k: v.contiguous() for k, v in checkpoint(VARIANT).items()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


FILES = {  # docs/bad-input.md row: (make the file at path, exception, message)
    'empty file': (lambda p: p.write_bytes(b''), ValueError, r'is empty \(0 bytes\)'),
    'truncated .safetensors': (_write_truncated_safetensors, ValueError, r'is not a readable safetensors file'),
    'text file': (lambda p: p.write_text('<html>404 Not Found</html>'), ValueError,
                  r"is neither a torch checkpoint .* starts with b'<h'"),
    'directory': (lambda p: p.mkdir(), IsADirectoryError, r'is a directory: give the checkpoint file in it'),
    'path that does not exist': (lambda p: None, FileNotFoundError, r'does not exist'),
}


@pytest.mark.parametrize('row', list(FILES))
def test_bad_weights_file(row, tmp_path):
    make, error, message = FILES[row]
    path = tmp_path / ('weights.safetensors' if 'safetensors' in row else 'weights.pth')
    make(path)
    with pytest.raises(error, match=rf"Pretrained weights file for {VARIANT} \('.*weights\..*'\) {message}"):
        _load_file(path)


def _nan(sd):
    sd['stage3.0.branches.1.0.bn1.running_var'] = sd['stage3.0.branches.1.0.bn1.running_var'].clone()
    sd['stage3.0.branches.1.0.bn1.running_var'][3] = float('nan')
    sd['layer1.0.conv1.weight'] = sd['layer1.0.conv1.weight'].clone().fill_(float('inf'))


def _integer(sd):
    sd['layer1.0.conv1.weight'] = sd['layer1.0.conv1.weight'].long()
    sd['bn1.num_batches_tracked'] = sd['bn1.num_batches_tracked'].float()


CHECKPOINTS = {  # docs/bad-input.md row: (change the checkpoint in place, message of the RuntimeError)
    'NaN or Inf in a tensor': (_nan, r'NaN or Inf values \(2\): layer1\.0\.conv1\.weight, '
                                     r'stage3\.0\.branches\.1\.0\.bn1\.running_var\.'),
    'integer tensor for a float weight (or the reverse)': (
        _integer, r'wrong type \(2\).* bn1\.num_batches_tracked \(torch\.float32\), '
                  r'layer1\.0\.conv1\.weight \(torch\.int64\)\.'),
}


@pytest.mark.parametrize('row', list(CHECKPOINTS))
def test_bad_checkpoint_values(row):
    change, message = CHECKPOINTS[row]
    sd = dict(checkpoint(VARIANT))
    change(sd)
    with pytest.raises(RuntimeError, match=message):
        timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=serve_modified(VARIANT, sd, 'bad-values'))


def test_non_finite_loads_non_strict_with_warning(caplog):
    sd = dict(checkpoint(VARIANT))
    _nan(sd)
    overlay = serve_modified(VARIANT, sd, 'nan-loose')
    with caplog.at_level(logging.WARNING):
        model = timm.create_model(VARIANT, pretrained=True, pretrained_cfg_overlay=overlay, strict=False)
    assert any('NaN or Inf values (2)' in r.getMessage() for r in caplog.records)
    assert torch.isinf(model.layer1[0].conv1.weight).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_checkpoint_loads_silently(dtype, caplog):
    """ float16 / bfloat16 weights load into the float32 model, exactly and without a warning: nothing is lost."""
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in checkpoint(VARIANT).items()}
    with caplog.at_level(logging.WARNING):
        model = timm.create_model(
            VARIANT, pretrained=True, pretrained_cfg_overlay=serve_modified(VARIANT, sd, f'low-{dtype}'))
    assert not caplog.records
    model_sd = model.state_dict()
    assert all(model_sd[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype) for k, v in sd.items())
    assert all(torch.equal(model_sd[k], v.to(model_sd[k].dtype)) for k, v in sd.items())


def test_precision_loss_warns(caplog):
    """ float32 weights into a bfloat16 model: they load, rounded, and a warning says so."""
    sd = checkpoint(VARIANT)
    with caplog.at_level(logging.WARNING):
        model = timm.create_model(VARIANT, pretrained=True, dtype=torch.bfloat16,
                                  pretrained_cfg_overlay=serve_modified(VARIANT, sd, 'fp32'))
    assert any('less precision or range: torch.float32 to torch.bfloat16' in r.getMessage() for r in caplog.records)
    assert model.conv1.weight.dtype == torch.bfloat16
    assert torch.equal(model.conv1.weight, sd['conv1.weight'].to(torch.bfloat16))


ARGS = {  # docs/bad-input.md row: (create_model kwargs, message of the ValueError)
    "head typo (head='clasification')": (dict(head='clasification'), r"Unknown HRNet head 'clasification'"),
    'in_chans=0': (dict(in_chans=0), r'in_chans must be a positive int, got 0'),
    'negative num_classes': (dict(num_classes=-1), r'num_classes must be an int >= 0 .*got -1'),
    'out_indices out of range': (dict(features_only=True, out_indices=(1, 5)), r'out_indices must be distinct ints'),
    'out_indices repeated': (dict(features_only=True, out_indices=(1, -4)), r'got \(1, -4\)'),
    'output_stride other than 8, 16, 32': (dict(output_stride=4), r'supports output_stride \(8, 16, 32\), got 4'),
    "upsample_mode typo (upsample_mode='bilnear')": (
        dict(upsample_mode='bilnear'), r"Unknown HRNet upsample_mode 'bilnear', valid values are \('nearest'"),
}


POLICY_ARGS = ('in_chans=0', 'negative num_classes')  # checked by the package's policy (_policy.py) only


@pytest.mark.parametrize('row', [pytest.param(r, marks=()) for r in ARGS])
def test_bad_arguments(row):
    kwargs, message = ARGS[row]
    with pytest.raises(ValueError, match=message):
        timm.create_model(VARIANT, **kwargs)


INPUTS = {  # docs/bad-input.md row: (input shape, train mode, message of the ValueError)
    'input without a batch dim (C, H, W)': ((3, 64, 64), False, r'expects input of shape \(B, 3, H, W\)'),
    'wrong channel count': ((2, 1, 64, 64), False, r'\(B, 3, H, W\) \(in_chans=3\), got \(2, 1, 64, 64\)'),
    'training on one 32 x 32 image': ((1, 3, 32, 32), True, r'more than one value per channel at stride 32'),
}


@pytest.mark.parametrize('head', ['classification', ''])
@pytest.mark.parametrize('row', list(INPUTS))
def test_bad_input_tensor(row, head):
    shape, train, message = INPUTS[row]
    model = timm.create_model(VARIANT, head=head).train(train)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape))


@pytest.mark.parametrize('shape', [(1, 3, 1, 1), (1, 3, 31, 7), (2, 3, 32, 32)])
def test_small_inputs_work(shape):
    """ Any spatial size works (maps of ceil(H / stride)); training needs two values per channel at stride 32."""
    model = timm.create_model(VARIANT, head='').train(shape[0] > 1)
    out = listed(model(torch.randn(shape)))
    assert out[-1].shape[-2:] == (-(-shape[2] // 32), -(-shape[3] // 32))


def _table_rows():
    text = TABLE.read_text()
    table = text[text.index('<!-- bad-input table -->'):text.index('<!-- end bad-input table -->')]
    return [[c.strip() for c in line.strip('|').split('|')] for line in table.splitlines()[3:] if line.startswith('|')]


def test_docs_table():
    """ docs/bad-input.md's table has exactly the rows tested here, and every test it names exists."""
    rows = _table_rows()
    named = {m.group(1) for m in (re.match(r'`([^`]+)`', r[0]) for r in rows) if m}
    assert set(FILES) | set(CHECKPOINTS) | set(ARGS) | set(INPUTS) <= named
    tests_dir = Path(__file__).parent
    for row in rows:
        for ref in re.findall(r'`(test_\w+)\.py::(test_\w+)', row[-1]):
            assert f'def {ref[1]}(' in (tests_dir / f'{ref[0]}.py').read_text(), ref
        assert re.search(r'`test_\w+\.py::test_\w+', row[-1]), row
