using System.Text.Json.Nodes;
using LinearLens.Models;
using LinearLens.Tests.Support;

namespace LinearLens.Tests.Cli;

/// <summary>The --json keys of generate, steer and jacobian, now serialized by library records, stay exactly as documented.</summary>
public sealed class CommandJsonKeysTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ll-keys").FullName;

    public CommandJsonKeysTests() => RandomCheckpoint.Write(dir, RandomCheckpointSpec.Preset("tiny-llama"), seed: 3, keepValues: false);

    public void Dispose() => Directory.Delete(dir, true);

    JsonObject Json(params string[] args)
    {
        var r = CliRunner.Run([args[0], "--model", dir, "--token-ids", "1,5,9,22", .. args[1..], "--json"]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        return JsonNode.Parse(r.Stdout)!.AsObject();
    }

    static string Keys(JsonObject o) => string.Join(",", o.Select(kv => kv.Key));

    [Fact]
    public void GenerateKeys() =>
        Assert.Equal("model_type,dtype,input_ids,output_ids,text,tokens,logprobs,stopped_at_eos", Keys(Json("generate", "--max-new-tokens", "3")));

    [Fact]
    public void SteerKeys()
    {
        var o = Json("steer", "--concept-token-ids", "1,7,8", "--lambda-sweep", "0,1", "--max-new-tokens", "2");
        Assert.Equal("model_type,dtype,num_layers,layer,detach,alignment,inject_after_layers,concept_ids,concept_tokens,concept_scored_ids,operator_shape," +
                     "operator_method,operator_relative_error,input_ids,max_new_tokens,operator_seconds,results", Keys(o));
        Assert.Equal("lambda,output_ids,text,tokens,logprobs,stopped_at_eos,concept_logprob_mean,concept_logprob_first,concept_logprob_per_step,concept_token_hits,seconds",
            Keys(o["results"]![1]!.AsObject()));
    }

    [Fact]
    public void JacobianKeys()
    {
        const string header = "model_type,dtype,input_ids,tokens,predicted_id,predicted_token,jacobian,target,detach,shape";
        var full = Json("jacobian", "--components", "2", "--method", "full");
        Assert.Equal(header + ",reconstruction,contribution_norms,seconds,out,method,method_reason,svd", Keys(full));
        Assert.Equal("relative_error,max_abs_error,offset_norm", Keys(full["reconstruction"]!.AsObject()));
        Assert.Equal("scope,components,algorithm,seconds,combined", Keys(full["svd"]!.AsObject()));
        var free = Json("jacobian", "--components", "2", "--method", "matrix-free", "--per-token");
        Assert.Equal(header + ",method,method_reason,reconstruction,svd,seconds", Keys(free));
        Assert.Equal("relative_error,max_abs_error,offset_norm,via", Keys(free["reconstruction"]!.AsObject()));
        Assert.Equal("scope,components,algorithm,seconds,tolerance,per_token", Keys(free["svd"]!.AsObject()));
        Assert.Equal("layer,key,mode,final_norm", Keys(free["target"]!.AsObject()));
    }
}
